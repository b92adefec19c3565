"""`fsmount umount` as umount(8): busy mounts are refused by name, --lazy detaches; pending changes told."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from fsmount.fs.mountpoint import is_mounted
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli
from tests.test_overlay_mount import make_base

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]


def test_busy_mount_is_refused_naming_its_user_and_lazy_detaches(tmp_path: Path, file_store_url: str) -> None:
    store, vid = make_base(tmp_path, file_store_url)
    with cli_mount(vid, tmp_path / "mnt", store, tmp_path / "cache") as mnt:
        user = subprocess.Popen(["sleep", "600"], cwd=mnt / "images", stdin=subprocess.DEVNULL)
        try:
            r = run_cli("umount", str(mnt), check=False)
            assert r.returncode == 32, r.stderr
            assert "target is busy" in r.stderr and f"{user.pid} (sleep)" in r.stderr, r.stderr
            assert len(r.stderr.strip().splitlines()) == 1 and "Traceback" not in r.stderr
            assert is_mounted(mnt)
            assert (mnt / "labels.csv").read_bytes() == b"id,label\n1,cat\n2,dog\n"  # still served
            r = run_cli("umount", "--lazy", str(mnt))
            assert not is_mounted(mnt) and r.stderr == ""
        finally:
            user.kill()
            user.wait()


def test_umount_and_mount_tell_about_pending_changes(tmp_path: Path, file_store_url: str) -> None:
    store, vid = make_base(tmp_path, file_store_url)
    overlay = tmp_path / "overlay"
    args = ("--write", "--overlay", str(overlay))
    with cli_mount(vid, tmp_path / "mnt", store, tmp_path / "cache", *args) as mnt:
        (mnt / "new.txt").write_text("new\n")
        os.remove(mnt / "docs/readme.txt")
        r = run_cli("umount", str(mnt))
        # new.txt, the removal, and docs/'s new mtime (the root's own attributes are not a change)
        assert r.stderr.startswith(f"3 pending change(s) kept in {overlay}"), r.stderr
    mnt = tmp_path / "mnt"
    try:
        r = run_cli("mount", vid, str(mnt), "--store", store, "--cache-dir", str(tmp_path / "cache"), *args)
        assert r.stderr.startswith(f"resuming 3 pending change(s) from {overlay}"), r.stderr
        assert (mnt / "new.txt").read_text() == "new\n"
        run_cli("discard", "--yes", str(mnt))
        r = run_cli("umount", str(mnt))
        assert r.stderr == ""  # nothing pending, nothing said
    finally:
        if is_mounted(mnt):
            subprocess.run(["fusermount3", "-u", "-z", str(mnt)], capture_output=True)
