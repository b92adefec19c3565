"""Audit of issue 9 ("never wrong bytes") on the new paths: packs, in-place reads, selections, fsspec, UI.

One packed version (the real packer, `fsmount sync`); one byte of one packed file is flipped in the
store (fetched into the cache, or read in place from the local store) or in the cache after a good
read. Every reader must refuse it (non-zero exit, OSError EIO, an HTTP error), or serve the right
bytes from a good copy; never the flipped bytes. The other files stay readable.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest

from fsmount.api.dataset import Dataset
from fsmount.api.fsspec_fs import FsmountFileSystem
from fsmount.format.hashing import object_key
from fsmount.format.objects import FileEntry
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, run_json, write_tree
from tests.ui_helpers import UiServer, png

VICTIM = "train/f07.txt"
FILES: dict[str, bytes | str] = {
    **{f"train/f{i:02}.txt": f"line {i}\n".encode() * (200 + 37 * i) for i in range(20)},
    "val/cat.png": png(24, 24, (10, 200, 30)),
    "val/notes.txt": b"notes\n" * 50,
}


@dataclass
class Packed:
    store: str
    root: Path  # the file:// store's folder
    vid: str
    pack: bytes  # hash of the pack holding VICTIM
    offset: int  # VICTIM's offset in it


def _flip(path: Path, offset: int) -> None:
    data = bytearray(path.read_bytes())
    data[offset] ^= 0x20
    path.write_bytes(bytes(data))


@pytest.fixture
def packed(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Packed:
    monkeypatch.delenv("FSMOUNT_PACK_THRESHOLD", raising=False)  # the default: small files packed
    root = tmp_path / "store"
    store = f"file://{root}"
    monkeypatch.setenv("FSMOUNT_STORE", store)
    src = write_tree(tmp_path / "src", FILES)
    vid = run_json("sync", "--folder", str(src), "--project", "p", "--name", "d")["id"]
    entries = dict(Dataset.get(dataset_id=vid).iter_entries())
    e = entries[VICTIM]
    assert isinstance(e, FileEntry) and len(e.blocks) == 1 and not isinstance(e.blocks[0], bytes), e
    pack, off, _ = e.blocks[0]
    assert sum(1 for x in entries.values() if isinstance(x, FileEntry) and x.blocks[0][0] == pack) > 5
    return Packed(store, root, vid, pack, off)


def _damage_store(p: Packed) -> None:
    _flip(p.root / object_key(p.pack), p.offset + 3)


def _damage_cache(p: Packed, cache: Path) -> None:
    # Value files only (*.val): opening and closing a cache's SQLite files from this process, which
    # holds connections to them (the fixture's Dataset.get), drops its POSIX locks on them, and the
    # CLI processes that write next can then corrupt the database (sqlite.org/howtocorrupt.html
    # §2.2). Reading every file here made this test fail with "database disk image is malformed".
    hits = [f for f in cache.rglob("*.val") if f.stat().st_size > 1000
            and hashlib.sha256(f.read_bytes()).digest() == p.pack]
    assert len(hits) == 1, "the pack is cached as one file"
    _flip(hits[0], p.offset + 3)


def _copy_readers(p: Packed, tmp: Path) -> dict[str, list[str]]:
    """Every CLI way of copying the victim out, by name."""
    return {
        "get": ["get", p.vid, "-q"],
        "get --copy": ["get", p.vid, "--copy", str(tmp / "copy"), "-q"],
        "get --files": ["get", p.vid, "--files", "train/**", "--copy", str(tmp / "sel"), "-q"],
        "get --part": ["get", p.vid, "--part", "0", "--num-parts", "1", "--copy", str(tmp / "part"), "-q"],
        "get --part (read-only)": ["get", p.vid, "--part", "0", "--num-parts", "2", "-q"],
    }


def _assert_never_served(p: Packed, tmp: Path, cache_ok: bool = False) -> None:
    want = FILES[VICTIM]
    for what, argv in _copy_readers(p, tmp).items():
        r = run_cli(*argv, check=False)
        if r.returncode == 0:  # only allowed when the bytes it made are right
            out = Path(r.stdout.strip().splitlines()[-1]) if what.endswith(")") or what == "get" else \
                Path(argv[argv.index("--copy") + 1])
            got = (out / VICTIM).read_bytes()
            assert cache_ok and got == want, f"{what}: exit 0 with wrong bytes"
        else:
            assert "Traceback" not in r.stderr and r.returncode != 70, (what, r.stderr)
        for d in ("copy", "sel", "part"):
            shutil.rmtree(tmp / d, ignore_errors=True)
    fs = FsmountFileSystem(store=p.store, skip_instance_cache=True)
    try:
        try:
            got = fs.cat_file(f"{p.vid}/{VICTIM}")
        except OSError as e:
            assert e.errno == errno.EIO
        else:
            assert cache_ok and got == want, "fsspec served wrong bytes"
    finally:
        fs.workspace.close()


@pytest.mark.parametrize("in_place", [False, True], ids=["fetched", "in-place"])
def test_a_flipped_byte_in_a_stored_pack_is_refused_by_every_copy_and_fsspec(
        packed: Packed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool) -> None:
    if in_place:
        monkeypatch.delenv("FSMOUNT_CACHE_LOCAL_STORE")
    _damage_store(packed)
    _assert_never_served(packed, tmp_path)
    # the other files of the pack are still served, checked by their own SHA-256 (as a mount does)
    fs = FsmountFileSystem(store=packed.store, skip_instance_cache=True)
    try:
        assert fs.cat_file(f"{packed.vid}/train/f03.txt") == FILES["train/f03.txt"]
        with fs.open(f"{packed.vid}/train/f04.txt") as f:
            f.seek(5)
            assert f.read(20) == FILES["train/f04.txt"][5:25]
    finally:
        fs.workspace.close()
    r = run_cli("warm", packed.vid, "-q", check=False)
    # warm skips a store read in place (nothing to cache); else the damaged pack fails it
    assert (r.returncode == 0) == in_place and "Traceback" not in r.stderr, r.stderr
    r = run_cli("verify", packed.vid, check=False)
    assert r.returncode != 0


def test_a_flipped_byte_in_a_cached_pack_is_never_served(packed: Packed, tmp_path: Path) -> None:
    run_cli("warm", packed.vid, "-q")
    cache = Path(os.environ["XDG_CACHE_HOME"])
    _damage_cache(packed, cache)
    _assert_never_served(packed, tmp_path, cache_ok=True)


@pytest.mark.usefixtures("require_fuse")
@pytest.mark.parametrize("in_place", [False, True], ids=["fetched", "in-place"])
def test_a_mount_and_the_web_ui_refuse_a_damaged_pack(
        packed: Packed, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool) -> None:
    if in_place:
        monkeypatch.delenv("FSMOUNT_CACHE_LOCAL_STORE")
    # the png and the victim share the pack? damage both: the image preview is served raw
    e = dict(Dataset.get(dataset_id=packed.vid).iter_entries())["val/cat.png"]
    assert isinstance(e, FileEntry) and not isinstance(e.blocks[0], bytes)
    _damage_store(packed)
    _flip(packed.root / object_key(e.blocks[0][0]), e.blocks[0][1] + 40)
    with cli_mount(packed.vid, tmp_path / "mnt", packed.store, tmp_path / "mcache") as mnt:
        with pytest.raises(OSError) as exc:
            (mnt / VICTIM).read_bytes()
        assert exc.value.errno == errno.EIO
        assert (mnt / "train/f03.txt").read_bytes() == FILES["train/f03.txt"]
    ui = UiServer(packed.store, tmp_path / "uicache")
    try:
        with httpx.Client(base_url=ui.url, timeout=30) as c:
            page = c.get(f"/v/{packed.vid}/files/{VICTIM}")
            assert "linE 7" not in page.text  # the flipped byte (offset 3: 'e' -> 'E')
            assert page.status_code >= 400, page.text[:500]
            raw = c.get(f"/v/{packed.vid}/raw/val/cat.png")
            assert raw.status_code >= 400 and raw.content != FILES["val/cat.png"]
            good = c.get(f"/v/{packed.vid}/files/train/f03.txt")
            assert good.status_code == 200 and "line 3" in good.text
    finally:
        ui.stop()
