"""Writable mounts for real: POSIX through the kernel, real tools, commit, kill -9, ENOSPC."""

from __future__ import annotations

import contextlib
import csv
import errno
import hashlib
import os
import shutil
import signal
import sqlite3
import subprocess
import tarfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.fs.control import log_path
from tests.fs_helpers import cli_mount, force_unmount, wait_until
from tests.helpers import FSMOUNT, hash_tree, run_json, write_tree

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]

BASE: dict[str, bytes | str] = {
    "labels.csv": b"id,label\n1,cat\n2,dog\n",
    "images/001.jpg": os.urandom(20_000),
    "images/002.jpg": os.urandom(5_000),
    "images/bad/003.jpg": b"junk",
    "docs/readme.txt": b"hello\n",
    "link": "->labels.csv",
}


@pytest.fixture
def base(tmp_path: Path, file_store_url: str) -> tuple[str, str]:
    return make_base(tmp_path, file_store_url)


def make_base(tmp_path: Path, store_url: str) -> tuple[str, str]:
    ws = Workspace(store_url)
    ds = Dataset.create("imgs", "proj", workspace=ws, block_size=4096)
    ds.add_files(write_tree(tmp_path / "src", BASE))
    ds.finalize()
    ws.close()
    return store_url, ds.id


@contextlib.contextmanager
def wmount(ref: str, mnt: Path, store: str, tmp_path: Path, *extra: str) -> Iterator[Path]:
    with cli_mount(ref, mnt, store, tmp_path / "cache", "--write", *extra) as m:
        yield m


def daemon_pid(mnt: Path) -> int:
    return int(run_json("status", str(mnt))["pid"])


def test_posix_basics_and_commit_round_trip(tmp_path: Path, store_url: str) -> None:
    store, ref = make_base(tmp_path, store_url)
    mnt = tmp_path / "mnt"
    with wmount(ref, mnt, store, tmp_path):
        (mnt / "labels.csv").write_bytes(b"id,label\n1,cat\n2,dog\n3,bird\n")
        with open(mnt / "images/001.jpg", "r+b") as f:  # write in the middle of a lower file
            f.seek(100)
            f.write(b"EDIT")
        shutil.rmtree(mnt / "images/bad")
        (mnt / "new").mkdir()
        (mnt / "new/file.bin").write_bytes(os.urandom(100_000))
        os.rename(mnt / "docs", mnt / "documents")
        os.chmod(mnt / "images/002.jpg", 0o600)
        os.symlink("documents/readme.txt", mnt / "readme")
        with open(mnt / "labels.csv", "ab") as f:
            f.write(b"4,fish\n")
        os.truncate(mnt / "images/002.jpg", 10)
        os.link(mnt / "labels.csv", mnt / "hard")  # a hard link: one inode, two names
        a, b = os.stat(mnt / "labels.csv"), os.stat(mnt / "hard")
        assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)
        with pytest.raises(OSError) as e:
            os.rmdir(mnt / "images")
        assert e.value.errno == errno.ENOTEMPTY
        (mnt / "images/bad").mkdir()
        assert os.listdir(mnt / "images/bad") == []  # made again: none of its old entries
        expected = hash_tree(mnt)
        st = run_json("status", str(mnt))
        assert st["counters"]["pending"] > 0
        pending = run_json("diff", str(mnt))
        assert "new/file.bin" in pending["added"] and "labels.csv" in pending["modified"]
        assert "images/bad/003.jpg" in pending["removed"]
        out = run_json("commit", str(mnt), "-m", "fix labels", "--tag", "fixed")
        child = out["id"]
        assert out["committed"] and out["parent"] == ref
        assert os.getxattr(mnt, "user.fsmount.version").decode() == child  # no unmount needed
        assert hash_tree(mnt) == expected
        assert run_json("status", str(mnt))["counters"]["pending"] == 0
        assert run_json("commit", str(mnt))["committed"] is False  # nothing to commit
        (mnt / "after.txt").write_text("keeps working after a commit\n")
        expected_after = hash_tree(mnt)
    ro = tmp_path / "ro"
    with cli_mount(child, ro, store, tmp_path / "cache2"):
        assert hash_tree(ro) == expected
        assert (ro / "images/002.jpg").stat().st_mode & 0o777 == 0o600
        a, b = os.stat(ro / "labels.csv"), os.stat(ro / "hard")  # the version keeps the link
        assert (a.st_ino, a.st_nlink) == (b.st_ino, 2)
    info = run_json("info", child, "--store", store)
    assert "fixed" in info["tags"] and info["parents"] == [ref]
    with wmount(child, mnt, store, tmp_path):  # the overlay kept the post-commit change
        assert hash_tree(mnt) == expected_after


def test_write_to_read_only_mount_is_erofs(tmp_path: Path, base: tuple[str, str]) -> None:
    store, ref = base
    with cli_mount(ref, tmp_path / "ro", store, tmp_path / "cache") as ro:
        with pytest.raises(OSError) as e:
            (ro / "x").write_text("x")
        assert e.value.errno == errno.EROFS


def test_real_tools_round_trip(tmp_path: Path, base: tuple[str, str]) -> None:
    store, ref = base
    mnt = tmp_path / "mnt"
    src = write_tree(tmp_path / "tree", {f"d{i}/f{j}.txt": os.urandom(300 + j) for i in range(5)
                                         for j in range(20)} | {"d0/ln": "->f1.txt", "empty/": ""})
    archive = tmp_path / "t.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(src, arcname="untarred")
    env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                        "GIT_COMMITTER_EMAIL": "t@t"}
    with wmount(ref, mnt, store, tmp_path):
        subprocess.run(["tar", "xf", str(archive), "-C", str(mnt)], check=True)
        subprocess.run(["cp", "-a", str(src), str(mnt / "copied")], check=True)
        subprocess.run(["rsync", "-a", f"{src}/", str(mnt / "rsynced")], check=True)  # make test installs it
        repo = mnt / "repo"
        repo.mkdir()
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
        (repo / "a.txt").write_text("one\n")
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", "first"], check=True, env=env)
        (repo / "a.txt").write_text("two\n")
        subprocess.run(["git", "-C", str(repo), "commit", "-qam", "second"], check=True, env=env)
        db = sqlite3.connect(mnt / "data.sqlite")
        db.execute("CREATE TABLE t (k INTEGER PRIMARY KEY, v TEXT)")
        db.executemany("INSERT INTO t (v) VALUES (?)", [(f"row {i}",) for i in range(2000)])
        db.commit()
        db.execute("UPDATE t SET v = 'changed' WHERE k % 7 = 0")
        db.commit()
        db.close()
        import pandas as pd  # a test extra

        frame = pd.DataFrame({"a": range(1000), "b": [f"x{i}" for i in range(1000)]})
        frame.to_csv(mnt / "table.csv", index=False)
        with open(mnt / "table.csv", "a", newline="") as f:  # and an append with the csv module
            csv.writer(f).writerow([1000, "x1000"])
        assert hash_tree(mnt / "untarred") == hash_tree(src)
        assert hash_tree(mnt / "copied") == hash_tree(src)
        assert hash_tree(mnt / "rsynced") == hash_tree(src)
        expected = hash_tree(mnt)
        child = run_json("commit", str(mnt), "-m", "tools")["id"]
    with cli_mount(child, tmp_path / "ro", store, tmp_path / "cache2") as ro:
        assert hash_tree(ro) == expected
        log = subprocess.run(["git", "-C", str(ro / "repo"), "log", "--oneline"], capture_output=True,
                             text=True, check=True, env=env | {"GIT_CEILING_DIRECTORIES": str(ro)})
        assert len(log.stdout.splitlines()) == 2
        con = sqlite3.connect(f"file:{ro / 'data.sqlite'}?mode=ro&immutable=1", uri=True)
        assert con.execute("SELECT count(*), sum(v = 'changed') FROM t").fetchone() == (2000, 285)
        con.close()
        back = pd.read_csv(ro / "table.csv")
        assert len(back) == 1001 and back["b"].iloc[-1] == "x1000" and back["a"].sum() == sum(range(1001))


def test_kill_9_after_writes_keeps_every_returned_write(tmp_path: Path, base: tuple[str, str]) -> None:
    store, ref = base
    mnt = tmp_path / "mnt"
    with wmount(ref, mnt, store, tmp_path):
        (mnt / "a.bin").write_bytes(b"a" * 300_000)
        with open(mnt / "labels.csv", "ab") as f:
            f.write(b"9,zebra\n")
        os.rename(mnt / "images", mnt / "pictures")
        os.unlink(mnt / "link")
        expected = hash_tree(mnt)
        pid = daemon_pid(mnt)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
                   .rpartition(")")[2].split()[0], what="daemon death")
        force_unmount(mnt)
    with wmount(ref, mnt, store, tmp_path):
        assert hash_tree(mnt) == expected
        child = run_json("commit", str(mnt))["id"]
    with cli_mount(child, tmp_path / "ro", store, tmp_path / "cache2") as ro:
        assert hash_tree(ro) == expected


def test_kill_9_during_commit_then_retry(tmp_path: Path, base: tuple[str, str]) -> None:
    store, ref = base
    mnt = tmp_path / "mnt"
    with wmount(ref, mnt, store, tmp_path):
        for i in range(40):
            (mnt / f"big{i}.bin").write_bytes(os.urandom(2**20))
        expected = hash_tree(mnt)
        pid = daemon_pid(mnt)
        committer = subprocess.Popen([*FSMOUNT, "commit", str(mnt), "--json"], stdout=subprocess.PIPE,
                                     stderr=subprocess.PIPE)
        # Kill once the commit is under way: its draft exists in the store.
        ws_probe = Workspace(store)
        wait_until(lambda: any(d.state == "draft" for d in Dataset.list_versions(workspace=ws_probe))
                   or committer.poll() is not None, what="the commit's draft")
        ws_probe.close()
        os.kill(pid, signal.SIGKILL)
        committer.wait(60)
        force_unmount(mnt)
    ws = Workspace(store)
    finals = [d for d in Dataset.list_versions(workspace=ws) if d.is_final]
    for d in finals:  # no half-made final version, whatever moment the kill hit
        assert d.verify_dataset_hash() == []
    with wmount(ref, mnt, store, tmp_path):  # a commit the kill interrupted after its flip is finished
        assert hash_tree(mnt) == expected
        out = run_json("commit", str(mnt))
        child = out["id"] or run_json("status", str(mnt))["counters"]["version"]
    finals = [d for d in Dataset.list_versions(workspace=ws) if d.is_final]
    assert len(finals) == 2  # the base and exactly one child
    with cli_mount(child, tmp_path / "ro", store, tmp_path / "cache2") as ro:
        assert hash_tree(ro) == expected
    ws.close()


def test_enospc_in_a_small_overlay(tmp_path: Path, base: tuple[str, str]) -> None:
    store, ref = base
    small = tmp_path / "small"
    small.mkdir()
    r = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=2m", "tmpfs", str(small)], capture_output=True)
    if r.returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    pid = 0
    try:
        mnt = tmp_path / "mnt"
        with wmount(ref, mnt, store, tmp_path, "--overlay", str(small / "ov")):
            pid = daemon_pid(mnt)
            with pytest.raises(OSError) as e, open(mnt / "huge.bin", "wb") as f:
                for _ in range(8):
                    f.write(os.urandom(2**20))
                    f.flush()
            assert e.value.errno == errno.ENOSPC
            os.unlink(mnt / "huge.bin")
            (mnt / "small.txt").write_text("still fine\n")
            assert (mnt / "small.txt").read_text() == "still fine\n"
            assert hash_tree(mnt / "images") == hash_tree(tmp_path / "src" / "images")
            log = log_path(str(mnt)).read_text()
            assert " ERROR " not in log and "Traceback" not in log  # ENOSPC is an ordinary reply
    finally:
        if pid:  # the daemon holds the overlay open until it exits
            wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="daemon exit")
        if subprocess.run(["umount", str(small)], capture_output=True).returncode != 0:
            subprocess.run(["umount", "-l", str(small)], capture_output=True)


@contextlib.contextmanager
def thin_disk(tmp_path: Path) -> Iterator[Path]:
    """An ext4 that believes it has 64 MiB, on a 6 MiB tmpfs (a loop device): like an overcommitted
    thin volume, writes land in the page cache and it is fsync that finds no room underneath."""
    under, disk = tmp_path / "under", tmp_path / "disk"
    under.mkdir()
    disk.mkdir()

    def sh(*cmd: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(cmd, capture_output=True, text=True)

    if sh("mount", "-t", "tmpfs", "-o", "size=6m", "tmpfs", str(under)).returncode != 0:
        pytest.skip("cannot mount a small tmpfs here")
    try:
        img = under / "img"
        img.touch()
        os.truncate(img, 64 * 2**20)
        if shutil.which("mkfs.ext4") is None or sh("mkfs.ext4", "-q", "-F", "-E",
                                                   "lazy_itable_init=1,lazy_journal_init=1",
                                                   str(img)).returncode != 0:
            pytest.skip("no mkfs.ext4 here")
        loop = sh("losetup", "-f", "--show", str(img))
        if loop.returncode != 0:
            pytest.skip("no loop devices here")
        dev = loop.stdout.strip()
        try:
            if sh("mount", "-t", "ext4", dev, str(disk)).returncode != 0:
                pytest.skip("cannot mount ext4 on a loop device here")
            try:
                yield disk
            finally:
                if sh("umount", str(disk)).returncode != 0:
                    sh("umount", "-l", str(disk))
        finally:
            sh("losetup", "-d", dev)
    finally:
        if sh("umount", str(under)).returncode != 0:
            sh("umount", "-l", str(under))


def test_enospc_from_fsync_reaches_the_caller_as_enospc(tmp_path: Path, base: tuple[str, str]) -> None:
    store, ref = base
    mnt = tmp_path / "mnt"
    with thin_disk(tmp_path) as disk:
        pid = 0
        try:
            with wmount(ref, mnt, store, tmp_path, "--overlay", str(disk / "ov"), "--log-level", "debug"):
                pid = daemon_pid(mnt)
                fd = os.open(mnt / "big.bin", os.O_WRONLY | os.O_CREAT, 0o644)
                try:
                    for _ in range(16):  # 16 MiB: every write returns, the disk underneath has 6
                        os.write(fd, os.urandom(2**20))
                    with pytest.raises(OSError) as e:
                        os.fsync(fd)
                    assert e.value.errno == errno.ENOSPC  # not EIO
                finally:
                    os.close(fd)
                log = log_path(str(mnt)).read_text()
        finally:
            if pid:  # the daemon holds the overlay open until it exits
                wait_until(lambda: not Path(f"/proc/{pid}").exists(), what="daemon exit")
    assert "DEBUG fsmount.fs.adapter: fsync: [Errno 28]" in log  # an ordinary reply: debug, one line
    assert "Traceback" not in log and " ERROR " not in log


def test_discard_drops_every_pending_change(tmp_path: Path, base: tuple[str, str]) -> None:
    store, ref = base
    mnt = tmp_path / "mnt"
    with wmount(ref, mnt, store, tmp_path):
        before = hash_tree(mnt)
        sha = os.getxattr(mnt / "labels.csv", "user.fsmount.sha256").decode()
        assert sha == hashlib.sha256(BASE["labels.csv"]).hexdigest()  # type: ignore[arg-type]
        (mnt / "new.txt").write_text("new\n")
        (mnt / "labels.csv").write_text("changed\n")
        with pytest.raises(OSError) as e:
            os.getxattr(mnt / "labels.csv", "user.fsmount.sha256")  # changed: no stored hash
        assert e.value.errno == errno.ENODATA
        os.unlink(mnt / "link")
        shutil.rmtree(mnt / "images")
        assert hash_tree(mnt) != before
        r = subprocess.run([*FSMOUNT, "discard", str(mnt)], input="n\n", capture_output=True, text=True)
        assert r.returncode != 0 and (mnt / "new.txt").exists()  # refused at the prompt: nothing dropped
        assert run_json("discard", str(mnt), "--yes")["discarded"] > 0
        assert hash_tree(mnt) == before
        assert not (mnt / "new.txt").exists()
        assert (mnt / "labels.csv").read_bytes() == BASE["labels.csv"]
        assert run_json("status", str(mnt))["counters"]["pending"] == 0
        pending = run_json("diff", str(mnt))
        assert pending["added"] == pending["modified"] == pending["removed"] == []
