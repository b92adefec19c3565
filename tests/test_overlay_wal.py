"""The overlay's sqlite form under many small changes: checkpoints off the caller's thread, rows changed
in place, the table layout of new and old overlays, and every returned change surviving kill -9."""

from __future__ import annotations

import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from fsmount.overlay import wal
from fsmount.overlay.rows import SCHEMA, SCHEMA_VERSION
from fsmount.overlay.upper import DIR, FILE, Row, UpperLayer

REPO = Path(__file__).parent.parent


def test_commits_never_checkpoint_inline_and_the_thread_does(tmp_path: Path,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    """The writer's connection never checkpoints (no fsync inside a change on the event loop); the
    background thread copies the WAL into the database after CHECKPOINT_EVERY commits."""
    monkeypatch.setattr(wal, "CHECKPOINT_EVERY", 50)
    up = UpperLayer(tmp_path / "ov")
    try:
        assert up.db.execute("PRAGMA wal_autocheckpoint").fetchone()[0] == 0
        up.put(Row("d", DIR, 0o755))
        for i in range(60):
            up.put(Row(f"d/f{i}", FILE, 0o644, data=f"{i:012d}"))
        assert up.checkpointer.wait(1, timeout=30), "no background checkpoint"
        # the database file alone (no WAL) now holds the rows the checkpoint copied
        shutil.copy(up.db_path, tmp_path / "alone.db")
        alone = sqlite3.connect(tmp_path / "alone.db")
        assert alone.execute("SELECT count(*) FROM entries").fetchone()[0] >= 50
        alone.close()
    finally:
        up.close()


def test_new_overlays_are_without_rowid_and_old_ones_still_change_in_place(tmp_path: Path) -> None:
    up = UpperLayer(tmp_path / "new")
    sql = dict(up.db.execute("SELECT name, sql FROM sqlite_master WHERE type = 'table'"))
    assert "WITHOUT ROWID" in sql["entries"] and "WITHOUT ROWID" in sql["links"]
    assert up.meta["schema"] == str(SCHEMA_VERSION)
    up.close()

    old = tmp_path / "old"  # an overlay of schema 1: a rowid table of nine columns, no links table
    old.mkdir(mode=0o700)
    db = sqlite3.connect(old / "upper.db", isolation_level=None)
    db.execute("PRAGMA journal_mode=WAL")
    db.executescript(SCHEMA)
    db.execute("INSERT INTO entries (path, kind, mode, mtime_ns) VALUES ('d', 1, 493, 5)")
    db.close()
    up = UpperLayer(old)
    assert up.rows["d"] == Row("d", DIR, 0o755, 5)
    up.put(Row("d", DIR, 0o700, 7, ctime_ns=9))  # an existing row: changed in place
    up.put(Row("d/x", FILE, 0o600, data="000000000001"))
    up.close()
    up = UpperLayer(old)
    assert up.rows["d"] == Row("d", DIR, 0o700, 7, ctime_ns=9) and up.rows["d/x"].data == "000000000001"
    assert up.meta["schema"] == str(SCHEMA_VERSION)
    up.close()


def test_a_row_deleted_and_put_again_in_one_batch_is_kept(tmp_path: Path) -> None:
    """The memory mirror still shows a row this batch deleted: the in-place change must notice."""
    up = UpperLayer(tmp_path / "ov")
    up.put(Row("a", FILE, 0o644, data="000000000001"))
    with up.batch() as b:
        b.delete("a")
        b.put(Row("a", FILE, 0o600, data="000000000002"))
    up.close()
    up = UpperLayer(tmp_path / "ov")
    try:
        assert up.rows["a"].data == "000000000002" and stat.S_IMODE(up.rows["a"].mode) == 0o600
    finally:
        up.close()


def test_thousands_of_small_changes_survive_kill_9(tmp_path: Path) -> None:
    """A child makes 1,500 files (create, write, chmod: more WAL than sqlite's own checkpoint would
    leave alone) and is SIGKILLed right after the last returned; every one is there, with its mode,
    bytes and the parent's mtime."""
    up = UpperLayer(tmp_path / "ov")
    up.bind("v" * 32, b"\0" * 32)
    up.close()
    script = f"""
import os, signal
from fsmount.overlay.upper import UpperLayer, Row, DIR, FILE
up = UpperLayer({str(tmp_path / 'ov')!r})
up.put(Row("d", DIR, 0o755, 1))
for i in range(1500):
    name, fd = up.new_data_file()
    os.pwrite(fd, b"%d" % i, 0)
    os.close(fd)
    with up.batch() as b:
        b.put(Row(f"d/f{{i}}", FILE, 0o600, data=name))
        b.put(Row("d", DIR, 0o755, 1000 + i, ctime_ns=1000 + i))
    up.put(Row(f"d/f{{i}}", FILE, 0o644, data=name, ctime_ns=i + 1))
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=REPO)
    assert proc.returncode == -signal.SIGKILL
    up = UpperLayer(tmp_path / "ov")
    try:
        files = [r for r in up.rows.values() if r.kind == FILE]
        assert len(files) == 1500
        assert all(r.mode == 0o644 for r in files)
        assert up.rows["d"].mtime_ns == 2499
        for r in files:
            i = int(r.path.rsplit("f", 1)[1])
            with open(up.data_path(r.data or ""), "rb") as f:
                assert f.read() == b"%d" % i
    finally:
        up.close()


def test_checkpointer_close_is_idempotent_and_leaves_no_wal(tmp_path: Path) -> None:
    up = UpperLayer(tmp_path / "ov")
    up.put(Row("a", DIR, 0o755))
    up.close()
    assert not os.path.exists(f"{up.db_path}-wal")  # the last connection to close checkpointed it
    up.checkpointer.close()
