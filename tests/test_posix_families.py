"""The POSIX assertions of tests/posix_checks.py, per syscall family, on a real writable mount
(--allow-other, as root, other users via setuid children) and on a local folder as the reference:
both must pass them, and observe the same errnos, modes and link counts."""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from tests.fs_helpers import cli_mount
from tests.helpers import write_tree
from tests.posix_checks import FAMILIES

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse"),
              pytest.mark.skipif(os.geteuid() != 0, reason="needs root (chown, mknod, other users)")]


def _searchable_tmp() -> str:
    """A temp folder every user can pass through (pytest's own folders are 0700; /tmp may be too)."""
    for d in ("/var/tmp", "/tmp", "/dev/shm"):
        if all(os.stat(p).st_mode & 0o001 for p in [d, *map(str, Path(d).parents)]):
            return d
    pytest.skip("no temp folder other users can reach")


@contextlib.contextmanager
def open_folder() -> Iterator[Path]:
    """A fresh folder that other users can reach."""
    top = Path(tempfile.mkdtemp(prefix="fsmount-posix-", dir=_searchable_tmp()))
    try:
        os.chmod(top, 0o755)
        yield top
    finally:
        shutil.rmtree(top, ignore_errors=True)


@pytest.fixture
def mounted(tmp_path: Path, file_store_url: str) -> Iterator[Path]:
    ws = Workspace(file_store_url)
    ds = Dataset.create("posix", "proj", workspace=ws)
    ds.add_files(write_tree(tmp_path / "src", {"readme.txt": b"hi\n"}))
    ds.finalize()
    ws.close()
    with open_folder() as top, cli_mount(ds.id, top / "mnt", file_store_url, tmp_path / "cache", "--write",
                                         "--allow-other") as mnt:
        os.chmod(mnt, 0o755)
        yield mnt


@pytest.mark.parametrize("family", sorted(FAMILIES))
def test_family_on_a_writable_mount_as_on_a_local_folder(family: str, mounted: Path) -> None:
    check = FAMILIES[family]
    with open_folder() as top:
        local = top / "t"
        local.mkdir(mode=0o755)
        reference = check(local)
    here = mounted / "t"
    here.mkdir(mode=0o755)
    assert check(here) == reference
