"""Mount start-up (the CLI forks its daemon) and where a file:// store is read in place."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsmount.store.local import LocalStore
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, run_json, write_tree

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]


def _version(store: str, tmp_path: Path) -> str:
    src = write_tree(tmp_path / "src", {"a.txt": b"a\n", "d/b.txt": b"b\n"})
    out = run_json("sync", "--folder", str(src), "--project", "p", "--name", "n", "--store", store)
    return str(out["id"])


def _daemon_cmdline(mnt: Path) -> list[str]:
    pid = run_json("status", str(mnt))["pid"]
    return Path(f"/proc/{pid}/cmdline").read_bytes().decode().split("\0")


@pytest.mark.parametrize("exec_daemon", [False, True], ids=["fork", "exec"])
def test_the_cli_forks_its_daemon_and_can_still_exec_one(
        file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, exec_daemon: bool) -> None:
    """A forked daemon is the `fsmount mount` process itself (no --foreground re-run of the CLI: one
    interpreter start and import instead of two); FSMOUNT_EXEC_DAEMON=1 keeps the separate process."""
    vid = _version(file_store_url, tmp_path)
    if exec_daemon:
        monkeypatch.setenv("FSMOUNT_EXEC_DAEMON", "1")
    with cli_mount(vid, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        assert (mnt / "d" / "b.txt").read_bytes() == b"b\n"
        assert ("--foreground" in _daemon_cmdline(mnt)) is exec_daemon
    assert not os.path.ismount(tmp_path / "mnt")


def test_a_forked_daemon_reports_its_start_failure(file_store_url: str, tmp_path: Path) -> None:
    vid = _version(file_store_url, tmp_path)
    (tmp_path / "mnt").mkdir()
    bad = run_cli("mount", vid, str(tmp_path / "mnt"), "--store", file_store_url, "--cache-dir",
                  str(tmp_path / "cache"), "--credentials-file", str(tmp_path / "missing"), check=False)
    assert bad.returncode != 0 and len(bad.stderr.strip().splitlines()) == 1, bad.stderr
    assert "Traceback" not in bad.stderr
    assert not os.path.ismount(tmp_path / "mnt")


def test_a_store_on_fuse_is_cached_and_a_local_one_read_in_place(
        file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSMOUNT_CACHE_LOCAL_STORE")
    assert LocalStore(tmp_path / "local").in_place
    vid = _version(file_store_url, tmp_path)
    with cli_mount(vid, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        on_fuse = LocalStore(mnt)  # a folder on a FUSE file system, as sshfs or a NAS client would be
        assert on_fuse.network_fs == "fuse" and not on_fuse.in_place
        assert on_fuse.local_path("objects/ab/" + "ab" * 32) is None
    monkeypatch.setenv("FSMOUNT_CACHE_LOCAL_STORE", "1")
    assert not LocalStore(tmp_path / "local").in_place
