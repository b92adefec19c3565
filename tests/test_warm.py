"""`fsmount warm`, `mount --warm` and pack-wise `get`: counted at the store (moto's request log, or a
file:// store whose objects are moved away), with real mounts, real moto and real file stores."""

from __future__ import annotations

import hashlib
import json
import os
import re
import threading
import uuid
from pathlib import Path

import boto3

from fsmount.api.dataset import Dataset
from fsmount.api.warm import plan_warm, run_warm
from fsmount.api.workspace import Workspace
from fsmount.commit.finalize import ChangeSet, finalize
from fsmount.commit.registry import read_state
from fsmount.format.hashing import digest, object_key
from fsmount.format.objects import FileEntry
from tests.conftest import MotoServer
from tests.fs_helpers import cli_mount, wait_until
from tests.helpers import hash_tree, run_cli, run_json, write_tree

BLOCK = 4096


def _blob(seed: str, size: int) -> bytes:
    out = bytearray()
    i = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{i}".encode()).digest()
        i += 1
    return bytes(out[:size])


def small_tree(n: int = 24) -> dict[str, bytes | str]:
    """Small files in folders, one multi-block file, a duplicate pair, an empty file and a symlink."""
    files: dict[str, bytes | str] = {
        f"c{i % 4}/img{i:03d}.jpg": _blob(f"s{i}", 200 + 97 * i) for i in range(n)
    }
    files["big/blocks.bin"] = _blob("big", 5 * BLOCK + 7)
    files["dup/a.bin"] = files["dup/b.bin"] = _blob("same", 3000)
    files["empty.txt"] = b""
    files["link"] = "->c0/img000.jpg"
    return files


def make_version(store: str, work: Path, files: dict[str, bytes | str]) -> str:
    ds = Dataset.create(dataset_name="warm", dataset_project="tests", store=store, block_size=BLOCK)
    ds.add_files(write_tree(work / "src", files))
    ds.finalize()
    return ds.id


def make_packed_version(store: str, files: dict[str, bytes]) -> tuple[str, bytes]:
    """A version whose files all live in one pack object, with ranged locators (FORMAT.md §4).

    Written the way a packing commit writes it: the pack object first, then finalize with entries
    `[pack, offset, length]`. Returns (version id, pack hash).
    """
    ds = Dataset.create(dataset_name="packed", dataset_project="tests", store=store)
    ws = ds.workspace
    pack = b"".join(files.values())
    h = digest(pack)
    ws.store.put(object_key(h), pack)
    changes = ChangeSet()
    off = 0
    for path, data in files.items():
        changes.puts[path] = FileEntry(
            name=path.rsplit("/", 1)[-1],
            mode=0o644,
            mtime_ns=0,
            size=len(data),
            sha256=hashlib.sha256(data).digest(),
            block_size=2**22,
            blocks=((h, off, len(data)),),
            origin=ds.id,
        )
        off += len(data)
    finalize(ws.store, ws.reader, read_state(ws.store, ds.id), changes, block_size=2**22)
    ws.close()
    return ds.id, h


# -- counting at the store -------------------------------------------------------------------------


class GetLog:
    """Object GETs of one bucket, read from the moto server's request log."""

    def __init__(self, moto: MotoServer, store_url: str) -> None:
        self.moto = moto
        self.bucket = store_url.removeprefix("s3://").split("/")[0]
        self.path = moto.workdir / "moto.log"
        self.start = self.path.stat().st_size

    def _settle(self) -> None:
        """Wait until moto has logged every request made so far: a request of our own, then its line."""
        marker = f"sentinel-{uuid.uuid4().hex}"
        s3 = boto3.client("s3", endpoint_url=self.moto.url)
        s3.list_objects_v2(Bucket=self.bucket, Prefix=marker)
        wait_until(lambda: marker in self._tail(), what="the moto log to catch up")

    def _tail(self) -> str:
        with open(self.path, "rb") as f:
            f.seek(self.start)
            return f.read().decode(errors="replace")

    def object_gets(self) -> list[str]:
        """Keys of the objects/ GETs logged since this log was made (or last reset)."""
        self._settle()
        pat = re.compile(rf'"GET /{re.escape(self.bucket)}/\S*objects/\S+/([0-9a-f]{{64}})\S* HTTP')
        return pat.findall(self._tail())

    def reset(self) -> None:
        self._settle()
        self.start = self.path.stat().st_size


def hide_objects(store_url: str) -> Path:
    """Move a file:// store's objects/ away: any fetch of an object now fails."""
    root = Path(store_url.removeprefix("file://"))
    away = root.parent / f"{root.name}-objects-away"
    os.rename(root / "objects", away)
    (root / "objects").mkdir()
    return away


# -- fsmount warm ------------------------------------------------------------------------------------


def test_warm_then_get_fetches_nothing_file_store(file_store_url: str, tmp_path: Path) -> None:
    files = small_tree()
    ref = make_version(file_store_url, tmp_path, files)
    cache = tmp_path / "cache"
    r = run_json("warm", ref, "--store", file_store_url, "--cache-dir", str(cache))
    assert r["files"] == len(files) - 1  # the symlink needs nothing
    assert r["fetched"] == r["objects"] and r["already_cached"] == 0
    hide_objects(file_store_url)  # from here on, any object fetch fails
    out = tmp_path / "copy"
    run_cli("get", ref, "--copy", str(out), "--store", file_store_url, "--cache-dir", str(cache))
    assert hash_tree(out) == hash_tree(tmp_path / "src")
    again = run_json("warm", ref, "--store", file_store_url, "--cache-dir", str(cache))
    assert again["fetched"] == 0 and again["already_cached"] == r["objects"]


def test_warm_then_mount_fetches_nothing_s3(
    s3_store_url: str, moto_server: MotoServer, tmp_path: Path, require_fuse: None
) -> None:
    files = small_tree()
    ref = make_version(s3_store_url, tmp_path, files)
    cache = tmp_path / "cache"
    log = GetLog(moto_server, s3_store_url)
    r = run_json("warm", ref, "c1", "big", "--store", s3_store_url, "--cache-dir", str(cache))
    gets = log.object_gets()
    assert len(gets) == len(set(gets)), "an object was fetched twice"
    want = {p: c for p, c in files.items() if p.startswith(("c1/", "big/"))}
    assert r["files"] == len(want) and r["paths"] == ["c1", "big"]
    log.reset()
    with cli_mount(ref, tmp_path / "mnt", s3_store_url, cache) as mnt:
        for p, content in want.items():
            assert isinstance(content, bytes)
            assert (mnt / p).read_bytes() == content
    assert log.object_gets() == [], "a read after warm went to the store"
    # the rest of the version was not warmed: reading it does fetch (the count can see a fetch)
    log.reset()
    with cli_mount(ref, tmp_path / "mnt", s3_store_url, cache) as mnt:
        assert (mnt / "c0/img000.jpg").read_bytes() == files["c0/img000.jpg"]
    assert len(log.object_gets()) >= 1


def test_warm_resumes_where_it_stopped(store_url: str, tmp_path: Path) -> None:
    ref = make_version(store_url, tmp_path, small_tree(40))
    ws = Workspace(store_url, cache_dir=tmp_path / "cache")
    ds = Dataset.get(ref=ref, workspace=ws)
    plan = plan_warm(ws.reader, ds.record.root)
    assert len(plan.missing) == len(plan.objects) > 10
    stop = threading.Event()
    landed = 0

    def advance(n: int) -> None:  # interrupt the warm after its first few objects
        nonlocal landed
        landed += 1
        if landed >= 3:
            stop.set()

    first, _ = run_warm(ws.reader, plan, workers=2, advance=advance, stop=stop)
    assert 3 <= first < len(plan.objects)
    before = ws.reader.stats.objects_fetched
    r = ds.warm()
    assert r.already_cached == first and r.fetched == len(plan.objects) - first
    assert ws.reader.stats.objects_fetched - before == r.fetched  # nothing fetched twice
    ws.close()


def test_warm_refuses_a_selection_larger_than_the_cache(file_store_url: str, tmp_path: Path) -> None:
    files = {f"d/f{i}.bin": _blob(f"cap{i}", 60_000) for i in range(10)}  # 600 kB
    ref = make_version(file_store_url, tmp_path, files)
    cache = tmp_path / "cache"
    p = run_cli(
        "warm",
        ref,
        "--store",
        file_store_url,
        "--cache-dir",
        str(cache),
        "--cache-size",
        "300KB",
        check=False,
    )
    assert p.returncode != 0
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "cache cap" in lines[0] and "Traceback" not in p.stderr, p.stderr
    ws = Workspace(file_store_url, cache_dir=cache)
    assert not any(h in ws.cache for h in (hashlib.sha256(c).digest() for c in files.values()))
    ws.close()
    # a part that fits is warmed
    r = run_json(
        "warm",
        ref,
        "d/f1.bin",
        "d/f2.bin",
        "--store",
        file_store_url,
        "--cache-dir",
        str(cache),
        "--cache-size",
        "300KB",
    )
    assert r["files"] == 2 and r["fetched"] == r["objects"] > 0


def test_warm_of_a_missing_path_is_one_line(file_store_url: str, tmp_path: Path) -> None:
    ref = make_version(file_store_url, tmp_path, {"a.txt": b"a"})
    p = run_cli("warm", ref, "nope/x", "--store", file_store_url, check=False)
    assert p.returncode != 0 and "nope/x" in p.stderr and len(p.stderr.strip().splitlines()) == 1


def test_warm_and_get_of_a_packed_version(s3_store_url: str, moto_server: MotoServer, tmp_path: Path) -> None:
    files = {f"c{i % 5}/f{i:03d}.bin": _blob(f"p{i}", 100 + 31 * i) for i in range(60)}
    ref, pack = make_packed_version(s3_store_url, files)
    log = GetLog(moto_server, s3_store_url)
    r = run_json("warm", ref, "--store", s3_store_url, "--cache-dir", str(tmp_path / "c1"))
    assert r["objects"] == 1 and r["fetched"] == 1
    assert log.object_gets().count(pack.hex()) == 1
    # get --copy on an empty cache: the pack is fetched once (and read once) for all 60 files
    log.reset()
    ws = Workspace(s3_store_url, cache_dir=tmp_path / "c2")
    out = Path(Dataset.get(ref=ref, workspace=ws).get_mutable_local_copy(tmp_path / "copy"))
    assert log.object_gets().count(pack.hex()) == 1
    assert ws.reader.stats.cache_hits == 0, "the pack was read again from the cache, per file"
    ws.close()
    got = {str(p.relative_to(out)): p.read_bytes() for p in out.rglob("*") if p.is_file()}
    assert got == files


def test_get_fetches_each_object_once(s3_store_url: str, moto_server: MotoServer, tmp_path: Path) -> None:
    files = small_tree()
    for i in range(10):  # many files holding one object
        files[f"same/{i}.bin"] = _blob("shared", 5000)
    ref = make_version(s3_store_url, tmp_path, files)
    log = GetLog(moto_server, s3_store_url)
    ws = Workspace(s3_store_url, cache_dir=tmp_path / "cache")
    out = Path(Dataset.get(ref=ref, workspace=ws).get_mutable_local_copy(tmp_path / "copy"))
    gets = log.object_gets()
    assert len(gets) == len(set(gets))
    assert ws.reader.stats.cache_hits == 0, "an object was read twice (store, then cache)"
    ws.close()
    assert hash_tree(out) == hash_tree(tmp_path / "src")


def test_get_of_a_corrupt_pack_fails(file_store_url: str, tmp_path: Path) -> None:
    files = {f"f{i}.bin": _blob(f"x{i}", 500) for i in range(5)}
    ref, pack = make_packed_version(file_store_url, files)
    path = Path(file_store_url.removeprefix("file://")) / object_key(pack)
    data = bytearray(path.read_bytes())
    data[700] ^= 1
    os.chmod(path, 0o600)
    path.write_bytes(bytes(data))
    p = run_cli("get", ref, "--copy", str(tmp_path / "copy"), "--store", file_store_url, check=False)
    assert p.returncode != 0 and "corrupt" in p.stderr
    p = run_cli("warm", ref, "--store", file_store_url, check=False)
    assert p.returncode != 0 and "corrupt" in p.stderr


# -- mount --warm ------------------------------------------------------------------------------------


def test_mount_warm_shows_progress_and_finishes(
    s3_store_url: str, moto_server: MotoServer, tmp_path: Path, require_fuse: None
) -> None:
    files = small_tree(30)
    ref = make_version(s3_store_url, tmp_path, files)
    cache = tmp_path / "cache"
    with cli_mount(ref, tmp_path / "mnt", s3_store_url, cache, "--warm", "c0,c2", "--warm", "big") as mnt:

        def status() -> dict:  # type: ignore[type-arg]
            return json.loads(run_cli("status", str(mnt), "--json").stdout)

        wait_until(lambda: status()["warm"]["state"] in ("done", "error"), what="the warm to finish")
        w = status()["warm"]
        assert w["state"] == "done", w
        assert w["paths"] == ["c0", "c2", "big"]
        assert w["objects_done"] == w["objects_total"] > 0 and w["bytes_done"] == w["bytes_total"]
        text = run_cli("status", str(mnt)).stdout
        assert "warm c0, c2, big: done" in text
        log = GetLog(moto_server, s3_store_url)
        for p, content in files.items():
            if p.startswith(("c0/", "c2/", "big/")):
                assert (mnt / p).read_bytes() == content
        assert log.object_gets() == [], "a read of a warmed path went to the store"


def test_mount_warm_error_is_shown_and_the_mount_serves(
    file_store_url: str, tmp_path: Path, require_fuse: None
) -> None:
    files = small_tree(8)
    ref = make_version(file_store_url, tmp_path, files)
    with cli_mount(ref, tmp_path / "mnt", file_store_url, tmp_path / "cache", "--warm", "no/such") as mnt:

        def warm() -> dict:  # type: ignore[type-arg]
            return json.loads(run_cli("status", str(mnt), "--json").stdout)["warm"]

        wait_until(lambda: warm()["state"] != "planning", what="the warm to end")
        assert warm()["state"] == "error" and "no/such" in warm()["error"]
        assert (mnt / "c1/img001.jpg").read_bytes() == files["c1/img001.jpg"]


def test_warm_option_in_conf_and_cli_args(tmp_path: Path) -> None:
    from fsmount.service.request import MountRequest

    req = MountRequest.from_cli("p/n", str(tmp_path), {"warm": ("a,b", "c")})
    assert req.warm_paths == ["a", "b", "c"]
    assert req.cli_args()[-4:] == ["--warm", "a,b", "--warm", "c"]
