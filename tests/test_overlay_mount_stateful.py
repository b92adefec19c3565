"""Hypothesis drives a real writable mount and a plain directory with the same syscalls, then commits.

One mount serves every example (a mount per example would dominate the run time); each
example continues from the state the previous one left, and ends with a commit through the
daemon. At the end the last version is mounted read-only and compared with the reference.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.check.store_check import check_store
from fsmount.overlay.upper import default_overlay_dir
from fsmount.overlay.upper_check import check_upper_folder
from tests.fs_helpers import cli_mount
from tests.helpers import run_json, write_tree
from tests.test_overlay_stateful import BASE, PATHS, ref_tree

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]

paths = st.sampled_from(PATHS)


class MountMachine(RuleBasedStateMachine):
    ctx: dict[str, Any] = {}

    def __init__(self) -> None:
        super().__init__()
        self.ref: Path = self.ctx["ref"]
        self.mnt: Path = self.ctx["mnt"]

    def _through_symlink(self, *ps: str) -> bool:
        for p in ps:
            parts = p.split("/")
            for i in range(1, len(parts)):
                if os.path.islink(self.ref / "/".join(parts[:i])):
                    return True
        return False

    def both(self, fn: Any, *ps: str) -> None:
        if self._through_symlink(*ps):
            return
        results = []
        for root in (self.ref, self.mnt):
            try:
                fn(*[str(root / p) for p in ps])
                results.append(0)
            except OSError as e:
                results.append(e.errno)
        assert results[1] == results[0], f"mount errno {results[1]} != reference {results[0]}"

    @rule(p=paths, offset=st.sampled_from([0, 1, 500, 6000]), body=st.binary(max_size=300),
          create=st.booleans())
    def write(self, p: str, offset: int, body: bytes, create: bool) -> None:
        def fn(path: str) -> None:
            fd = os.open(path, os.O_WRONLY | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o644)
            try:
                os.pwrite(fd, body, offset)
            finally:
                os.close(fd)

        self.both(fn, p)

    @rule(p=paths, size=st.sampled_from([0, 3, 7000]))
    def truncate(self, p: str, size: int) -> None:
        if not os.path.islink(self.ref / p):
            self.both(lambda x: os.truncate(x, size), p)

    @rule(p=paths)
    def unlink(self, p: str) -> None:
        self.both(os.unlink, p)

    @rule(p=paths)
    def mkdir(self, p: str) -> None:
        self.both(lambda x: os.mkdir(x, 0o755), p)

    @rule(p=paths)
    def rmdir(self, p: str) -> None:
        self.both(os.rmdir, p)

    @rule(old=paths, new=paths)
    def rename(self, old: str, new: str) -> None:
        self.both(os.rename, old, new)

    @rule(p=paths, mode=st.sampled_from([0o600, 0o755]))
    def chmod(self, p: str, mode: int) -> None:
        if not os.path.islink(self.ref / p):
            self.both(lambda x: os.chmod(x, mode), p)

    @rule(p=paths, dest=st.sampled_from(["a", "/nonexistent/x", "c/a"]))
    def symlink(self, p: str, dest: str) -> None:
        self.both(lambda x: os.symlink(dest, x), p)

    @invariant()
    def same_tree(self) -> None:
        assert ref_tree(self.mnt) == ref_tree(self.ref)

    def teardown(self) -> None:
        run_json("commit", str(self.mnt))
        ws = self.ctx["ws"]
        overlay = default_overlay_dir(ws.store_url, str(self.mnt))
        assert check_upper_folder(overlay, ws.reader.tree, live=True) == []  # live: spares are allowed
        assert check_store(ws.store, read_data=True).problems == []


def test_writable_mount_matches_a_plain_directory(tmp_path: Path, file_store_url: str) -> None:
    os.umask(0o022)
    ws = Workspace(file_store_url)
    src = write_tree(tmp_path / "src", BASE)
    ds = Dataset.create("sm", "proj", workspace=ws)
    ds.add_files(src)
    ds.finalize()
    ref = tmp_path / "ref"
    shutil.copytree(src, ref, symlinks=True)
    mnt = tmp_path / "mnt"
    with cli_mount(ds.id, mnt, file_store_url, tmp_path / "cache", "--write"):
        MountMachine.ctx = {"ref": ref, "mnt": mnt, "ws": ws}
        run_state_machine_as_test(MountMachine, settings=settings(
            max_examples=int(os.environ.get("OVERLAY_MOUNT_EXAMPLES", "8")), stateful_step_count=20,
            deadline=None, database=None, suppress_health_check=list(HealthCheck)))
        last = run_json("status", str(mnt))["counters"]["version"]
    with cli_mount(last, tmp_path / "ro", file_store_url, tmp_path / "cache2") as ro:
        assert ref_tree(ro) == ref_tree(ref)
    ws.close()
