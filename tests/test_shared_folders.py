"""A shared folder (sticky, like /tmp) named as fsmount's own is refused, never tightened."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from tests.helpers import run_cli, write_tree
from tests.test_cli import assert_one_line_error


@pytest.fixture
def shared(tmp_path: Path) -> Path:
    d = tmp_path / "shared"
    d.mkdir()
    os.chmod(d, 0o1777)
    return d


def test_runtime_and_overlay_folders_refuse_a_sticky_folder(tmp_path: Path, shared: Path,
                                                             file_store_url: str) -> None:
    env = os.environ | {"FSMOUNT_RUNTIME_DIR": str(shared)}
    assert_one_line_error(run_cli("status", env=env, check=False), "is a shared folder (sticky, like /tmp)")
    assert os.stat(shared).st_mode & 0o7777 == 0o1777
    src = write_tree(tmp_path / "src", {"a.txt": b"a"})
    run_cli("sync", "--folder", str(src), "--project", "p", "--name", "n", "-q", "--store", file_store_url)
    (tmp_path / "mnt").mkdir()
    proc = run_cli("mount", "p/n", str(tmp_path / "mnt"), "--store", file_store_url, "--write",
                   "--overlay", str(shared), check=False)
    assert_one_line_error(proc, "overlay folder")
    assert os.stat(shared).st_mode & 0o7777 == 0o1777 and not os.path.ismount(tmp_path / "mnt")


def test_a_sticky_cache_folder_is_used_but_left_as_it_is(tmp_path: Path, shared: Path,
                                                          file_store_url: str) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a"})
    run_cli("sync", "--folder", str(src), "--project", "p", "--name", "n", "-q", "--store", file_store_url)
    copy = run_cli("get", "p/n", "-q", "--store", file_store_url, "--cache-dir", str(shared)).stdout.strip()
    assert Path(copy, "a.txt").read_bytes() == b"a"
    assert os.stat(shared).st_mode & 0o7777 == 0o1777
    assert os.stat(shared / "copies").st_mode & 0o777 == 0o700  # what fsmount puts inside stays private
