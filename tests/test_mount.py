"""Real FUSE mounts through the CLI: the merged tree, tools, seeks, mmap, threads, caching, failures."""

from __future__ import annotations

import errno
import hashlib
import json
import mmap
import os
import shutil
import signal
import subprocess
import tarfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fsmount.api.dataset import Dataset
from fsmount.fs.control import pid_alive
from fsmount.fs.mountpoint import is_mounted
from tests.fs_helpers import BLOCK, cli_mount, expected_hashes, force_unmount, make_lineage, wait_until
from tests.helpers import hash_tree, run_cli

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]


def status(mnt: Path) -> dict[str, Any]:
    return json.loads(run_cli("status", str(mnt), "--json").stdout)


def _sha(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_merged_tree_and_tools(store_url: str, tmp_path: Path) -> None:
    ids, merged = make_lineage(store_url, tmp_path / "src")
    mnt = tmp_path / "mnt"
    with cli_mount(ids[-1], mnt, store_url, tmp_path / "cache"):
        assert hash_tree(mnt) == expected_hashes(merged)
        # find, stat, ls -l, cp -r, tar c
        found = subprocess.run(["find", str(mnt), "-type", "f"], capture_output=True, text=True, check=True)
        files = sorted(os.path.relpath(p, mnt) for p in found.stdout.split())
        assert files == sorted(p for p, c in merged.items() if isinstance(c, bytes))
        st = os.stat(mnt / "big.bin")
        assert st.st_size == len(merged["big.bin"]) and st.st_mode & 0o777 == 0o644
        assert st.st_ino == os.stat(mnt / "big.bin").st_ino
        assert os.stat(mnt).st_nlink == 1  # directories are not counted; find and ls -lR still work
        assert os.lstat(mnt / "link").st_size == len("labels.csv")
        ls = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True, check=True).stdout
        assert "link -> labels.csv" in ls and "emptydir" in ls
        subprocess.run(["cp", "-r", str(mnt), str(tmp_path / "copy")], check=True)
        assert hash_tree(tmp_path / "copy") == expected_hashes(merged)
        with tarfile.open(tmp_path / "t.tar", "w") as tar:
            tar.add(mnt, arcname=".")
        subprocess.run(["tar", "cf", str(tmp_path / "t2.tar"), "-C", str(mnt), "."], check=True)
        with tarfile.open(tmp_path / "t2.tar") as tar:
            big = tar.extractfile("./big.bin")
            assert big is not None and big.read() == merged["big.bin"]
        # xattrs: provenance and the whole-file hash
        assert os.getxattr(mnt, "user.fsmount.version") == ids[-1].encode()
        assert os.getxattr(mnt / "test/001.jpg", "user.fsmount.version") == ids[3].encode()
        assert os.getxattr(mnt / "big.bin", "user.fsmount.sha256") == _sha(mnt / "big.bin").encode()
        # statfs
        sv = os.statvfs(mnt)
        assert sv.f_bsize == BLOCK and sv.f_files > 0
        assert status(mnt)["counters"]["errors"] == 0


def test_seeks_mmap_and_writes(file_store_url: str, tmp_path: Path) -> None:
    ids, merged = make_lineage(file_store_url, tmp_path / "src")
    data = merged["big.bin"]
    assert isinstance(data, bytes)
    mnt = tmp_path / "mnt"
    with cli_mount(ids[-1], mnt, file_store_url, tmp_path / "cache"):
        with open(mnt / "big.bin", "rb", buffering=0) as f:
            for off, size in [(0, 1), (BLOCK - 1, 2), (BLOCK, BLOCK), (5 * BLOCK - 3, 2 * BLOCK + 6),
                              (len(data) - 10, 50), (len(data) + 5, 5), (17 * BLOCK + 100, 1)]:
                f.seek(off)
                assert f.read(size) == data[off:off + size], (off, size)
        with open(mnt / "big.bin", "rb") as f, mmap.mmap(f.fileno(), 0, prot=mmap.PROT_READ) as m:
            assert m[:] == data
            assert m[3 * BLOCK - 2:3 * BLOCK + 2] == data[3 * BLOCK - 2:3 * BLOCK + 2]
        # Every kind of change fails with EROFS, and the daemon stays up.
        def open_close(path: Path, mode: str) -> None:
            with open(path, mode):
                pass

        attempts = [
            lambda: open_close(mnt / "new.txt", "w"),
            lambda: open_close(mnt / "labels.csv", "r+b"),
            lambda: open_close(mnt / "labels.csv", "ab"),
            lambda: os.mkdir(mnt / "d"),
            lambda: os.rmdir(mnt / "emptydir"),
            lambda: os.unlink(mnt / "labels.csv"),
            lambda: os.rename(mnt / "labels.csv", mnt / "x.csv"),
            lambda: os.symlink("x", mnt / "s"),
            lambda: os.link(mnt / "labels.csv", mnt / "h"),
            lambda: os.chmod(mnt / "labels.csv", 0o600),
            lambda: os.truncate(mnt / "labels.csv", 0),
            lambda: os.utime(mnt / "labels.csv"),
            lambda: os.setxattr(mnt / "labels.csv", "user.x", b"1"),
            lambda: os.removexattr(mnt / "labels.csv", "user.fsmount.sha256"),
            lambda: os.mknod(mnt / "fifo", 0o600 | 0o010000),
        ]
        for i, attempt in enumerate(attempts):
            with pytest.raises(OSError) as e:
                attempt()
            assert e.value.errno == errno.EROFS, (i, e.value)
        assert (mnt / "labels.csv").read_bytes() == merged["labels.csv"]
        with pytest.raises(FileNotFoundError):
            os.stat(mnt / "nope")
        assert is_mounted(mnt)


def test_threads_second_mount_and_remount_fetch_nothing(file_store_url: str, tmp_path: Path) -> None:
    ids, merged = make_lineage(file_store_url, tmp_path / "src")
    want = {p: hashlib.sha256(c).hexdigest() for p, c in merged.items() if isinstance(c, bytes)}
    cache = tmp_path / "cache"
    a, b = tmp_path / "a", tmp_path / "b"
    jobs = [p for p in want for _ in range(3)] + ["big.bin"] * 8

    def check(root: Path) -> None:
        with ThreadPoolExecutor(8) as pool:
            results = list(pool.map(lambda p: (p, _sha(root / p)), jobs))
        assert all(h == want[p] for p, h in results)

    with cli_mount(ids[-1], a, file_store_url, cache):
        check(a)
        first = status(a)["counters"]
        assert first["store"]["objects_fetched"] > 0 and first["errors"] == 0
        with cli_mount(ids[-1], b, file_store_url, cache):
            check(b)
            assert status(b)["counters"]["store"]["objects_fetched"] == 0
            listed = json.loads(run_cli("status", "--json").stdout)["mounts"]
            assert {m["mountpoint"] for m in listed} == {str(a), str(b)}
        run_cli("umount", str(a))
        assert not is_mounted(a)
    with cli_mount(ids[-1], a, file_store_url, cache):
        assert hash_tree(a) == expected_hashes(merged)
        c = status(a)["counters"]
        assert c["store"]["objects_fetched"] == 0 and c["block_misses"] == 0


def _snapshot_bucket(url: str, bucket: str) -> dict[str, bytes]:
    import boto3

    s3 = boto3.client("s3", endpoint_url=url)
    out = {}
    for page in s3.get_paginator("list_objects_v2").paginate(Bucket=bucket):
        for obj in page.get("Contents", ()):
            out[obj["Key"]] = s3.get_object(Bucket=bucket, Key=obj["Key"])["Body"].read()
    return out


def _restore_bucket(url: str, bucket: str, objects: dict[str, bytes]) -> None:
    import boto3

    s3 = boto3.client("s3", endpoint_url=url)
    s3.create_bucket(Bucket=bucket)
    for k, v in objects.items():
        s3.put_object(Bucket=bucket, Key=k, Body=v)


@pytest.mark.s3
def test_offline_reads_cached_and_fails_fast_on_uncached(s3_store_url: str, moto_server: Any,
                                                         tmp_path: Path) -> None:
    ids, merged = make_lineage(s3_store_url, tmp_path / "src")
    bucket = s3_store_url.split("/")[2]
    mnt = tmp_path / "mnt"
    with cli_mount(ids[-1], mnt, s3_store_url, tmp_path / "cache", "--timeout", "3"):
        assert (mnt / "labels.csv").read_bytes() == merged["labels.csv"]
        assert (mnt / "train/cat/002.jpg").read_bytes() == merged["train/cat/002.jpg"]
        objects = _snapshot_bucket(moto_server.url, bucket)
        moto_server.stop()
        try:
            # Cached data and metadata still read; uncached data fails with EIO, quickly.
            assert (mnt / "labels.csv").read_bytes() == merged["labels.csv"]
            assert (mnt / "train/cat/002.jpg").read_bytes() == merged["train/cat/002.jpg"]
            assert sorted(os.listdir(mnt / "train/cat")) == ["001.jpg", "002.jpg"]
            t0 = time.monotonic()
            with pytest.raises(OSError) as e:
                (mnt / "big.bin").read_bytes()
            assert e.value.errno == errno.EIO
            assert time.monotonic() - t0 < 15
            with pytest.raises(OSError) as e:
                os.listdir(mnt / "deep")
            assert e.value.errno == errno.EIO
        finally:
            moto_server.start()
            _restore_bucket(moto_server.url, bucket, objects)
        # The store is back: the same mount reads again, no remount.
        assert (mnt / "big.bin").read_bytes() == merged["big.bin"]
        assert (mnt / "deep/a/b/c/d.txt").read_bytes() == merged["deep/a/b/c/d.txt"]
        c = status(mnt)["counters"]
        assert c["store"]["store_errors"] + c["timeouts"] > 0


def test_corrupt_block_gives_eio(file_store_url: str, tmp_path: Path) -> None:
    ids, merged = make_lineage(file_store_url, tmp_path / "src")
    store_root = Path(file_store_url[len("file://"):])
    ws_ds = Dataset.get(dataset_id=ids[0], store=file_store_url)
    entry = dict(ws_ds.iter_entries())["train/cat/002.jpg"]
    h = entry.blocks[1]
    obj = store_root / "objects" / h.hex()[:2] / h.hex()
    obj.write_bytes(b"\0" * obj.stat().st_size)
    mnt = tmp_path / "mnt"
    with cli_mount(ids[-1], mnt, file_store_url, tmp_path / "cache"):
        with open(mnt / "train/cat/002.jpg", "rb", buffering=0) as f:
            assert f.read(100) == merged["train/cat/002.jpg"][:100]  # type: ignore[index]
            f.seek(BLOCK)
            with pytest.raises(OSError) as e:
                f.read(100)
            assert e.value.errno == errno.EIO
        assert (mnt / "labels.csv").read_bytes() == merged["labels.csv"]
        c = status(mnt)["counters"]
        assert c["store"]["integrity_errors"] >= 1 and c["errors"] >= 1 and "corrupt" in c["last_error"]


def test_bad_input_is_one_line_and_mounts_nothing(file_store_url: str, tmp_path: Path) -> None:
    ids, _ = make_lineage(file_store_url, tmp_path / "src")
    draft = Dataset.create(dataset_name="draft", dataset_project="lineage", store=file_store_url)
    empty = tmp_path / "empty"
    empty.mkdir()
    full = tmp_path / "full"
    full.mkdir()
    (full / "x").write_text("x")
    afile = tmp_path / "afile"
    afile.write_text("x")
    store = ["--store", file_store_url, "--cache-dir", str(tmp_path / "cache")]
    cases = [
        (["mount", "0" * 32, str(empty), *store], "no dataset version"),
        (["mount", "nosuchref", str(empty), *store], "invalid dataset reference"),
        (["mount", draft.id, str(empty), *store], "not final"),
        (["mount", ids[-1], str(tmp_path / "missing"), *store], "does not exist"),
        (["mount", ids[-1], str(afile), *store], "not a directory"),
        (["mount", ids[-1], str(full), *store], "not empty"),
        (["mount", ids[-1], str(empty), "--store", file_store_url, "--cache-dir", str(afile / "sub")],
         "cache directory"),
        (["umount", str(empty)], "not mounted"),
        (["status", str(empty)], "not an fsmount mount"),
    ]
    for args, words in cases:
        r = run_cli(*args, check=False)
        assert r.returncode != 0, args
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], (args, r.stderr)
        assert "Traceback" not in r.stderr
        assert not is_mounted(empty)
    mnt = tmp_path / "mnt"
    with cli_mount(ids[-1], mnt, file_store_url, tmp_path / "cache"):
        r = run_cli("mount", ids[-1], str(mnt), *store, check=False)
        assert r.returncode != 0 and "already mounted" in r.stderr and len(r.stderr.strip().splitlines()) == 1


def test_signals_and_dead_daemon(file_store_url: str, tmp_path: Path) -> None:
    ids, merged = make_lineage(file_store_url, tmp_path / "src")
    mnt = tmp_path / "mnt"
    with cli_mount(ids[-1], mnt, file_store_url, tmp_path / "cache"):
        pid = status(mnt)["pid"]
        os.kill(pid, signal.SIGTERM)
        wait_until(lambda: not is_mounted(mnt), what="SIGTERM unmount")
        wait_until(lambda: not pid_alive(pid), what="daemon exit")
    with cli_mount(ids[-1], mnt, file_store_url, tmp_path / "cache"):
        pid = status(mnt)["pid"]
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not pid_alive(pid), what="daemon death")
        with pytest.raises(OSError) as e:
            os.listdir(mnt)
        # The kernel says ENOTCONN once /dev/fuse is closed, ECONNABORTED while it aborts.
        assert e.value.errno in (errno.ENOTCONN, errno.ECONNABORTED)
        assert is_mounted(mnt)
        listed = json.loads(run_cli("status", "--json").stdout)["mounts"]
        assert [m["alive"] for m in listed if m["pid"] == pid] == [False]
        run_cli("umount", str(mnt))
        assert not is_mounted(mnt)
    # And the directory can be mounted again straight away.
    with cli_mount(ids[-1], mnt, file_store_url, tmp_path / "cache"):
        assert (mnt / "labels.csv").read_bytes() == merged["labels.csv"]


def test_python_context_manager(file_store_url: str, tmp_path: Path) -> None:
    from fsmount.fs import mounted

    ids, merged = make_lineage(file_store_url, tmp_path / "src")
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with mounted(ids[-1], mnt, store=file_store_url, cache_dir=str(tmp_path / "cache")) as m:
            assert (mnt / "labels.csv").read_bytes() == merged["labels.csv"]
            assert m.status()["counters"]["version"] == ids[-1]
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)
    assert shutil.which("fusermount3")
