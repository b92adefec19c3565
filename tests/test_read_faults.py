"""A damaged or stalled store through a real mount: EIO (never a missing file), counted, logged, and
recovered without a remount once the store is repaired; a stalled store fails a read after the timeout."""

from __future__ import annotations

import errno
import json
import os
import signal
import subprocess
import time
from pathlib import Path
from typing import Any

import pytest

from fsmount.format.hashing import digest, object_key, record_key
from fsmount.format.objects import DirEntry, decode_tree
from fsmount.format.records import VersionRecord
from tests.conftest import MotoServer
from tests.fs_helpers import cli_mount, wait_until
from tests.helpers import run_cli, run_json, write_tree

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]

FILES: dict[str, bytes | str] = {"f.bin": os.urandom(10_000), "sub/x.txt": b"x\n", "other/y.txt": b"y\n"}


def _status(mnt: Path) -> dict[str, Any]:
    return json.loads(run_cli("status", str(mnt), "--json").stdout)["counters"]


def _errno_of(fn: Any) -> int:
    with pytest.raises(OSError) as e:
        fn()
    return e.value.errno  # type: ignore[return-value]


def _sync(store_url: str, tmp_path: Path) -> str:
    src = write_tree(tmp_path / "src", FILES)
    return run_json("sync", "--folder", str(src), "--project", "p", "--name", "n", "--store", store_url)["id"]


def _version(store_url: str, tmp_path: Path) -> tuple[str, dict[str, bytes]]:
    """A version of FILES in a file:// store; its id and the hashes of the root's subdirectory trees."""
    vid = _sync(store_url, tmp_path)
    root = Path(store_url.removeprefix("file://"))
    rec = VersionRecord.decode((root / record_key(vid)).read_bytes())
    top = decode_tree((root / object_key(rec.root)).read_bytes())
    return vid, {e.name: e.tree for e in top.entries if isinstance(e, DirEntry)}


def _log_lines(home: Path, needle: str) -> list[str]:
    return [line for log in (home / "run").glob("*.log") for line in log.read_text().splitlines()
            if needle in line]


def test_a_missing_block_is_eio_counted_and_recovers(file_store_url: str, tmp_path: Path,
                                                     isolated_env: Path) -> None:
    vid, _ = _version(file_store_url, tmp_path)
    block = Path(file_store_url.removeprefix("file://")) / object_key(digest(FILES["f.bin"]))  # type: ignore[arg-type]
    aside = block.with_name("aside")
    block.rename(aside)
    with cli_mount(vid, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        assert _errno_of((mnt / "f.bin").read_bytes) == errno.EIO  # damage, not "no such file"
        st = _status(mnt)
        assert st["read_errors"] >= 1 and st["errors"] >= 1
        assert block.name in st["last_error"] and "not found" in st["last_error"]
        logged = _log_lines(isolated_env, block.name)
        assert logged and all("ERROR" in line for line in logged)
        assert not _log_lines(isolated_env, "Traceback")
        aside.rename(block)  # the store is repaired: the next read works, no remount
        assert (mnt / "f.bin").read_bytes() == FILES["f.bin"]


@pytest.mark.parametrize("damage", ["missing", "garbage"])
def test_a_damaged_subtree_is_eio_and_its_parent_still_lists(file_store_url: str, tmp_path: Path,
                                                             damage: str) -> None:
    vid, trees = _version(file_store_url, tmp_path)
    obj = Path(file_store_url.removeprefix("file://")) / object_key(trees["sub"])
    good = obj.read_bytes()
    if damage == "missing":
        obj.unlink()
    else:
        obj.write_bytes(b"\x93garbage" + good[8:])
    with cli_mount(vid, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        assert sorted(os.listdir(mnt)) == ["f.bin", "other", "sub"]  # no child's tree is needed
        assert os.stat(mnt / "sub").st_nlink == 1
        for _ in range(2):  # the failure is an error reply, never a cached negative entry
            assert _errno_of(lambda: os.listdir(mnt / "sub")) == errno.EIO
            assert _errno_of(lambda: os.stat(mnt / "sub" / "x.txt")) == errno.EIO
        assert _errno_of(lambda: os.stat(mnt / "nope")) == errno.ENOENT  # a real miss is still ENOENT
        assert _status(mnt)["metadata_errors"] >= 1
        obj.write_bytes(good)  # repaired: no remount needed
        assert os.listdir(mnt / "sub") == ["x.txt"]
        assert (mnt / "sub" / "x.txt").read_bytes() == b"x\n"
        found = subprocess.run(["find", str(mnt), "-type", "f"], capture_output=True, text=True, check=True)
        assert sorted(os.path.relpath(p, mnt) for p in found.stdout.split()) == sorted(FILES)
        ls = subprocess.run(["ls", "-lR", str(mnt)], capture_output=True, text=True, check=True).stdout
        assert "x.txt" in ls and "y.txt" in ls


TIMEOUT = 3.0


def test_a_stalled_store_fails_a_read_after_the_timeout_not_twice_it(
        s3_store_url: str, moto_server: MotoServer, tmp_path: Path) -> None:
    """The kernel retries a failed read with a second request; that one must not wait again.

    The bound is on our behaviour, not a benchmark: without the fix a read takes at least
    2 x TIMEOUT (each request waits the full timeout); with it about TIMEOUT. The bound,
    1.5 x TIMEOUT + 0.5 s, leaves a loaded machine 1.5 s of slack and still fails at 2 x TIMEOUT.
    """
    vid = _sync(s3_store_url, tmp_path)
    assert moto_server.proc is not None
    timeout = ("--timeout", f"{TIMEOUT:g}")
    with cli_mount(vid, tmp_path / "mnt", s3_store_url, tmp_path / "cache", *timeout) as mnt:
        os.kill(moto_server.proc.pid, signal.SIGSTOP)
        try:
            start = time.monotonic()
            cat = subprocess.run(["cat", str(mnt / "f.bin")], capture_output=True, timeout=60)
            elapsed = time.monotonic() - start
        finally:
            os.kill(moto_server.proc.pid, signal.SIGCONT)
        assert cat.returncode != 0 and b"Input/output error" in cat.stderr
        assert TIMEOUT * 0.9 <= elapsed < 1.5 * TIMEOUT + 0.5, elapsed
        assert _status(mnt)["timeouts"] >= 1
        # Once the store answers again (and the timeout's memory of TIMEOUT seconds has passed), reads work.
        wait_until(lambda: subprocess.run(["cat", str(mnt / "f.bin")], capture_output=True,
                                          timeout=60).stdout == FILES["f.bin"], what="reads after the stall")
