"""Real tools on a writable mount: tar with hard links and owners, cp -a, rsync -H, git; hard links
kept by a commit (read-only mount, get --copy); special files refused at commit; new files'
times; owners kept by the overlay across a remount."""

from __future__ import annotations

import io
import os
import shutil
import socket
import stat
import subprocess
import tarfile
import time
from pathlib import Path

import pytest

from fsmount.overlay.upper import default_overlay_dir
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, run_json
from tests.test_overlay_mount import base, wmount  # noqa: F401  (the fixture)

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]
root_only = pytest.mark.skipif(os.geteuid() != 0, reason="restoring owners needs root")


def _archive(path: Path) -> Path:
    """A tar with a hard link and files owned by other users, as pip wheels or source tarballs have."""
    with tarfile.open(path, "w") as tf:
        for name, data, uid in (("pkg/a.py", b"print('a')\n", 1234), ("pkg/data.bin", os.urandom(9000), 0)):
            info = tarfile.TarInfo(name)
            info.size, info.uid, info.gid, info.mode, info.mtime = len(data), uid, uid, 0o644, 1_600_000_000
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg/b.py")
        link.type, link.linkname, link.uid, link.gid = tarfile.LNKTYPE, "pkg/a.py", 1234, 1234
        tf.addfile(link)
    return path


def same_file(a: Path, b: Path) -> bool:
    sa, sb = os.lstat(a), os.lstat(b)
    return sa.st_ino == sb.st_ino and sa.st_nlink == sb.st_nlink >= 2


@root_only
def test_tar_with_hard_links_and_owners_then_commit_keeps_the_link(
        tmp_path: Path, base: tuple[str, str]) -> None:  # noqa: F811
    store, ref = base
    mnt = tmp_path / "mnt"
    archive = _archive(tmp_path / "pkg.tar")
    with wmount(ref, mnt, store, tmp_path) as m:
        subprocess.run(["tar", "xf", str(archive), "-C", str(m)], check=True, capture_output=True)
        assert same_file(m / "pkg/a.py", m / "pkg/b.py")
        st = os.lstat(m / "pkg/a.py")
        assert (st.st_uid, st.st_gid, st.st_mtime_ns) == (1234, 1234, 1_600_000_000 * 10**9)
        assert os.lstat(m / "pkg/data.bin").st_uid == 0
        child = run_json("commit", str(m), "-m", "untarred")["id"]
        assert same_file(m / "pkg/a.py", m / "pkg/b.py")  # still one inode on the new version
        with open(m / "pkg/b.py", "a") as f:  # a committed group: a write shows at every name
            f.write("print('b')\n")
        assert (m / "pkg/a.py").read_text() == "print('a')\nprint('b')\n"
        run_cli("discard", str(m), "--yes")
    ro = tmp_path / "ro"
    with cli_mount(child, ro, store, tmp_path / "cache2"):
        assert same_file(ro / "pkg/a.py", ro / "pkg/b.py")
        assert (ro / "pkg/b.py").read_bytes() == b"print('a')\n"
    copy = tmp_path / "copy"
    run_cli("get", child, "--copy", str(copy), "--store", store, "--cache-dir", str(tmp_path / "cache3"))
    assert same_file(copy / "pkg/a.py", copy / "pkg/b.py")
    assert (copy / "pkg/b.py").read_bytes() == b"print('a')\n"


def test_cp_rsync_and_git_keep_hard_links(tmp_path: Path, base: tuple[str, str]) -> None:  # noqa: F811
    store, ref = base
    src = tmp_path / "src"
    (src / "d").mkdir(parents=True)
    (src / "d/one").write_bytes(b"shared bytes\n")
    os.link(src / "d/one", src / "d/two")
    os.link(src / "d/one", src / "three")
    with wmount(ref, tmp_path / "mnt", store, tmp_path) as m:
        subprocess.run(["cp", "-a", str(src), str(m / "cp")], check=True)
        assert same_file(m / "cp/d/one", m / "cp/three") and os.lstat(m / "cp/d/two").st_nlink == 3
        if shutil.which("rsync"):
            subprocess.run(["rsync", "-aH", f"{src}/", str(m / "rs")], check=True, capture_output=True)
            assert same_file(m / "rs/d/one", m / "rs/d/two") and same_file(m / "rs/d/one", m / "rs/three")
        env = os.environ | {"GIT_AUTHOR_NAME": "t", "GIT_AUTHOR_EMAIL": "t@t", "GIT_COMMITTER_NAME": "t",
                            "GIT_COMMITTER_EMAIL": "t@t"}
        repo = m / "repo"
        subprocess.run(["git", "init", "-q", str(repo)], check=True, env=env)
        (repo / "f.txt").write_text("tracked\n")
        subprocess.run(["git", "-C", str(repo), "add", "."], check=True, env=env)
        subprocess.run(["git", "-C", str(repo), "commit", "-qm", "one"], check=True, env=env)
        # a local clone hard-links the object store
        subprocess.run(["git", "clone", "-q", "--local", str(repo), str(m / "clone")], check=True, env=env)
        objs = [p for p in (m / "clone/.git/objects").rglob("*") if p.is_file() and p.parent.name != "pack"]
        assert objs and any(os.lstat(p).st_nlink == 2 for p in objs)
        subprocess.run(["git", "-C", str(m / "clone"), "fsck"], capture_output=True, check=True, env=env)
        assert (m / "clone/f.txt").read_text() == "tracked\n"


def test_special_files_stay_in_the_overlay_and_commit_names_them(
        tmp_path: Path, base: tuple[str, str]) -> None:  # noqa: F811
    store, ref = base
    with wmount(ref, tmp_path / "mnt", store, tmp_path) as m:
        os.mkfifo(m / "queue")
        sock = socket.socket(socket.AF_UNIX)
        sock.bind(str(m / "ctl.sock"))
        sock.close()
        assert stat.S_ISFIFO(os.lstat(m / "queue").st_mode)
        assert stat.S_ISSOCK(os.lstat(m / "ctl.sock").st_mode)
        out = run_cli("commit", str(m), check=False)
        assert out.returncode != 0
        assert "ctl.sock" in out.stderr and "queue" in out.stderr and "special" in out.stderr
        os.unlink(m / "queue")
        os.unlink(m / "ctl.sock")
        (m / "plain.txt").write_text("x")
        assert run_json("commit", str(m))["committed"]


def test_new_files_get_the_time_of_their_creation_not_of_a_spare(
        tmp_path: Path, base: tuple[str, str]) -> None:  # noqa: F811
    store, ref = base
    mnt = tmp_path / "mnt"
    with wmount(ref, mnt, store, tmp_path) as m:
        data = default_overlay_dir(store, str(mnt)) / "data"
        for spare in data.iterdir():  # the spares made ahead of time: an hour old
            os.utime(spare, ns=(time.time_ns() - 3600 * 10**9,) * 2)
        t0 = time.time_ns()
        (m / "new.txt").write_text("new\n")
        st = os.lstat(m / "new.txt")
        assert all(abs(t - t0) < 10**9 for t in (st.st_mtime_ns, st.st_atime_ns, st.st_ctime_ns))


@root_only
def test_owners_are_kept_in_the_overlay_across_a_remount(
        tmp_path: Path, base: tuple[str, str]) -> None:  # noqa: F811
    store, ref = base
    mnt = tmp_path / "mnt"
    with wmount(ref, mnt, store, tmp_path) as m:
        (m / "theirs").write_text("x")
        os.chown(m / "theirs", 4321, 8765)
        os.chown(m / "labels.csv", 4321, -1)  # a lower file: metadata only
    with wmount(ref, mnt, store, tmp_path) as m:
        assert (os.lstat(m / "theirs").st_uid, os.lstat(m / "theirs").st_gid) == (4321, 8765)
        assert os.lstat(m / "labels.csv").st_uid == 4321
