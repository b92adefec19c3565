"""Mounting where FUSE is unavailable: one clear line, non-zero exit, nothing mounted."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.fs.mountpoint import is_mounted
from tests.helpers import FSMOUNT, write_tree

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]


def test_missing_dev_fuse_is_one_line(file_store_url: str, tmp_path: Path) -> None:
    if shutil.which("unshare") is None:
        pytest.skip("unshare (util-linux) is missing")
    probe = subprocess.run(["unshare", "-m", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip(f"cannot make a mount namespace here: {probe.stderr.decode().strip()}")
    ds = Dataset.create("nofuse", "env", store=file_store_url)
    ds.add_files(write_tree(tmp_path / "src", {"a": "a"}))
    ds.finalize()
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    # A private mount namespace whose /dev is an empty tmpfs: no /dev/fuse in there.
    script = 'mount -t tmpfs none /dev && exec "$@"'
    proc = subprocess.run(
        ["unshare", "-m", "--propagation", "private", "sh", "-c", script, "sh", *FSMOUNT, "mount", ds.id,
         str(mnt), "--store", file_store_url],
        capture_output=True, text=True, timeout=60, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1 and "/dev/fuse is missing" in lines[0], proc.stderr
    assert not is_mounted(mnt)
