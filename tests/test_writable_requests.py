"""What the kernel asks a writable mount per small file: FLUSH once per mount, and the promises of
a returned write and create kept without it (kill -9 after close)."""

from __future__ import annotations

import os
import signal
from pathlib import Path

import pytest

from tests.fs_helpers import force_unmount, wait_until
from tests.helpers import run_json
from tests.test_overlay_mount import daemon_pid, make_base, wmount

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]


def test_close_sends_flush_once_per_mount_and_every_closed_file_survives_kill_9(
        tmp_path: Path, file_store_url: str) -> None:
    store, ref = make_base(tmp_path, file_store_url)
    mnt = tmp_path / "mnt"
    with wmount(ref, mnt, store, tmp_path):
        (mnt / "new").mkdir()
        for i in range(20):
            fd = os.open(mnt / f"new/f{i}", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            os.write(fd, b"%d" % i * 100)
            os.fchmod(fd, 0o644)
            os.close(fd)
        c = run_json("status", str(mnt))["counters"]
        assert c["flushes"] == 1  # answered ENOSYS: the kernel stopped sending it
        pid = daemon_pid(mnt)
        os.kill(pid, signal.SIGKILL)
        wait_until(lambda: not Path(f"/proc/{pid}").exists() or "Z" in Path(f"/proc/{pid}/stat").read_text()
                   .rpartition(")")[2].split()[0], what="daemon death")
        force_unmount(mnt)
    with wmount(ref, mnt, store, tmp_path):
        for i in range(20):
            p = mnt / f"new/f{i}"
            assert p.read_bytes() == b"%d" % i * 100 and p.stat().st_mode & 0o777 == 0o644
