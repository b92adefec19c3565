"""Lengths checked against objects: a locator past its object's end, a bare block shorter than its
derived length, a size of 2^62 over a 10-byte block, a whole-file SHA-256 that does not match.

Each hostile version is written with the real writer functions (encode_tree, store.put, the
record codec) and read through a real FUSE mount, `get`, `get --copy` and `verify`: EIO or a
non-zero exit, never a short or shifted file. Each file's SHA-256 is set to what a reader that
skipped the length check would produce, so only the length check can catch it.
"""

from __future__ import annotations

import dataclasses
import errno
import hashlib
from pathlib import Path

import pytest

from fsmount.api.dataset import Dataset
from fsmount.cache.local_cache import ContentCache
from fsmount.format.hashing import digest, object_key, record_key
from fsmount.format.objects import FileEntry, encode_tree
from fsmount.format.records import VersionRecord
from fsmount.store import open_store
from tests.fs_helpers import BLOCK, _blob, cli_mount
from tests.helpers import run_cli, write_tree

O1, O2 = _blob("o1", BLOCK), _blob("o2", BLOCK)
SHORT, TAIL = _blob("short", BLOCK - 96), _blob("tail", 100)
TEN = b"0123456789"
OBJECTS = (O1, O2, SHORT, TAIL, TEN)
ORIGIN = "0" * 32  # replaced by the version's own id


def _sha(data: bytes) -> bytes:
    return hashlib.sha256(data).digest()


def _entry(name: str, size: int, blocks: tuple, sha: bytes, origin: str,
           block_size: int = BLOCK) -> FileEntry:
    return FileEntry(name, 0o644, 0, size, sha, block_size, blocks, origin)


def _cases() -> dict[str, FileEntry]:
    """Hostile entries. Each SHA-256 is that of the pieces a reader without length checks would
    serve one after the other, so only a length check can refuse them."""
    shifted = O1[4000:] + O2[:100]  # ranged (O1, 4000, 200) runs 104 bytes past O1's end
    short = SHORT + TAIL  # bare SHORT: derived length BLOCK, object BLOCK - 96
    return {
        "shifted.bin": _entry("shifted.bin", 300, ((digest(O1), 4000, 200), (digest(O2), 0, 100)),
                              _sha(shifted), ORIGIN),
        "short.bin": _entry("short.bin", BLOCK + 100, (digest(SHORT), digest(TAIL)), _sha(short), ORIGIN),
        # one bare block whose hash is the file's: the single-block form the codec accepts
        "huge.bin": _entry("huge.bin", 2**30, (digest(TEN),), digest(TEN), ORIGIN, block_size=2**30),
        # a bad first block under 39 good ones: the writers of later blocks wait for the hash of the
        # first, and must be released when it fails (no hang)
        "firstshort.bin": _entry("firstshort.bin", 40 * BLOCK, (digest(SHORT),) + (digest(O1),) * 39,
                                 _sha(SHORT + O1 * 39), ORIGIN),
        # authentic blocks, lengths right, but the file's SHA-256 is not theirs
        "wronghash.bin": _entry("wronghash.bin", 2 * BLOCK, (digest(O1), digest(O2)), _sha(b"other"), ORIGIN),
    }


def hostile_version(url: str, work: Path, name: str, entries: list[FileEntry]) -> str:
    """A final version (made by the real API) whose record is then pointed at a hostile root tree."""
    ds = Dataset.create(dataset_name=name, dataset_project="hostile", store=url, block_size=BLOCK)
    ds.add_files(write_tree(work / name, {"ok.txt": b"fine\n"}))
    ds.finalize(message=name)
    store = open_store(url)
    for obj in OBJECTS:
        store.put(object_key(digest(obj)), obj)
    entries = [dataclasses.replace(e, origin=ds.id) for e in entries]
    tree = encode_tree([*entries, _entry("ok.txt", 5, (_sha(b"fine\n"),), _sha(b"fine\n"), ds.id)])
    store.put(object_key(digest(tree)), tree)
    rec = VersionRecord.decode(store.get(record_key(ds.id)))
    store.delete(record_key(ds.id))
    store.put(record_key(ds.id), dataclasses.replace(rec, root=digest(tree), files=len(entries) + 1).encode())
    cache = ContentCache()
    cache.clear()  # this process may have cached the honest record
    cache.close()
    return ds.id


def test_mount_reads_of_bad_lengths_are_eio(file_store_url: str, tmp_path: Path,
                                            require_fuse: None) -> None:
    cases = _cases()
    vid = hostile_version(file_store_url, tmp_path / "src", "mounted", list(cases.values()))
    with cli_mount(vid, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        assert (mnt / "ok.txt").read_bytes() == b"fine\n"
        assert (mnt / "huge.bin").stat().st_size == 2**30
        for name in ("shifted.bin", "short.bin", "huge.bin"):
            with open(mnt / name, "rb", buffering=0) as f, pytest.raises(OSError) as e:
                f.read(1 << 20)
            assert e.value.errno == errno.EIO, name
        # A read inside the first span of the shifted file is refused too: its locator is bad.
        with open(mnt / "shifted.bin", "rb", buffering=0) as f, pytest.raises(OSError) as e:
            f.read(10)
        assert e.value.errno == errno.EIO
        st = run_cli("status", str(mnt), "--json").stdout
        assert '"integrity_errors": 0' not in st


@pytest.mark.parametrize("name", ["shifted.bin", "short.bin", "huge.bin", "firstshort.bin", "wronghash.bin"])
def test_get_of_bad_lengths_fails_and_leaves_no_copy(file_store_url: str, tmp_path: Path, name: str) -> None:
    entry = _cases()[name]
    vid = hostile_version(file_store_url, tmp_path / "src", name.split(".")[0], [entry])
    cache = tmp_path / "cache"
    copy = tmp_path / "copy"
    proc = run_cli("get", vid, "--copy", str(copy), "--store", file_store_url, "--cache-dir", str(cache),
                   check=False)
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and name in lines[0] and "Traceback" not in proc.stderr, proc.stderr
    if (copy / name).exists():  # whatever was written is never the whole, "successful" file
        assert (copy / name).stat().st_size != entry.size or _sha((copy / name).read_bytes()) != entry.sha256
    proc = run_cli("get", vid, "--store", file_store_url, "--cache-dir", str(cache), check=False)
    assert proc.returncode != 0 and name in proc.stderr
    copies = cache / "copies"
    assert not copies.exists() or not any(copies.iterdir())  # no copy, no complete-marker, no temp folder


@pytest.mark.parametrize("name", ["shifted.bin", "short.bin", "huge.bin", "wronghash.bin"])
def test_verify_of_bad_lengths_fails(file_store_url: str, tmp_path: Path, name: str) -> None:
    vid = hostile_version(file_store_url, tmp_path / "src", name.split(".")[0], [_cases()[name]])
    proc = run_cli("verify", vid, "--store", file_store_url, check=False)
    assert proc.returncode != 0 and name in proc.stdout + proc.stderr


def test_get_of_honest_multi_block_files_still_works(file_store_url: str, tmp_path: Path) -> None:
    """The whole-file hash while writing: many blocks, written out of order by 16 threads."""
    files = {f"f{i}.bin": _blob(f"f{i}", 37 * BLOCK + i) for i in range(6)}
    files["empty"] = b""
    files["one.bin"] = _blob("one", BLOCK)
    ds = Dataset.create(dataset_name="honest", dataset_project="hostile", store=file_store_url,
                        block_size=BLOCK)
    ds.add_files(write_tree(tmp_path / "src", files))
    ds.finalize()
    copy = tmp_path / "copy"
    run_cli("get", ds.id, "--copy", str(copy), "--store", file_store_url)
    for name, data in files.items():
        assert (copy / name).read_bytes() == data
