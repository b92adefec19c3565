"""The upper-layer check: a real overlay made through the merged view, then damaged one invariant at once."""

from __future__ import annotations

import os
import sqlite3
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmount.api.sync import sync
from fsmount.api.workspace import Workspace
from fsmount.overlay.merged import MergedView
from fsmount.overlay.upper import SPARES, UpperLayer
from fsmount.overlay.upper_check import check_upper_folder
from tests.helpers import write_tree


@pytest.fixture
def overlay(tmp_path: Path) -> Iterator[tuple[Path, Workspace]]:
    """A closed overlay: a new file, a copied-up file, a renamed lower file and directory, a whiteout."""
    ws = Workspace(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache")
    src = write_tree(tmp_path / "src", {"a.txt": b"a", "sub/b.txt": b"b", "sub/c/d": b"d", "gone": b"g"})
    ds = sync(src, project="p", name="n", workspace=ws)[0]
    folder = tmp_path / "overlay"
    upper = UpperLayer(folder)
    # A close() while the spares thread is filling can leave a spare behind (UpperLayer._make_spares
    # closes the new file's fd but keeps the file): let the first fill end; two creates don't refill.
    deadline = time.monotonic() + 60
    while len(upper.files._spares) < SPARES and time.monotonic() < deadline:
        time.sleep(0.01)  # polling a condition, not a timing assumption
    upper.bind(ds.id, ds.record.root)
    view = MergedView(upper, ws.reader, ds.record.root)
    fh = view.create("new.txt", 0o644)
    view.write(fh, 0, b"new")
    view.release(fh)
    fh = view.open("a.txt", os.O_WRONLY)
    view.write(fh, 1, b"+")
    view.release(fh)
    view.rename("sub/b.txt", "b2.txt")
    view.rename("sub", "moved")
    view.mkdir("moved/made", 0o755)
    view.unlink("gone")
    view.symlink("ln", "a.txt")
    assert check_upper_folder(folder, ws.reader.tree, live=True) == []  # open, with its spares
    upper.close()
    yield folder, ws
    ws.close()


def _sql(folder: Path, statement: str, *args: object) -> None:
    db = sqlite3.connect(folder / "upper.db")
    with db:
        db.execute(statement, args)
    db.close()


def _data_of(folder: Path, path: str) -> str:
    db = sqlite3.connect(folder / "upper.db")
    (name,) = db.execute("SELECT data FROM entries WHERE path = ?", (path,)).fetchone()
    db.close()
    return str(name)


def test_a_healthy_overlay_checks_clean(overlay: tuple[Path, Workspace]) -> None:
    folder, ws = overlay
    assert check_upper_folder(folder, ws.reader.tree) == []


def test_a_row_below_a_file_row(overlay: tuple[Path, Workspace]) -> None:
    folder, ws = overlay
    _sql(folder, "INSERT INTO entries (path, kind, mode) VALUES ('new.txt/x', 1, 493)")
    assert check_upper_folder(folder, ws.reader.tree) == [
        "'new.txt/x': a directory row below the file row 'new.txt'"]


def test_a_row_below_a_whiteout(overlay: tuple[Path, Workspace]) -> None:
    folder, ws = overlay
    _sql(folder, "INSERT INTO entries (path, kind, mode, target) VALUES ('gone/x', 2, 511, 'a')")
    assert check_upper_folder(folder, ws.reader.tree) == [
        "'gone/x': a symlink row below the whiteout row 'gone'"]


def test_a_row_whose_parent_is_a_lower_file(overlay: tuple[Path, Workspace]) -> None:
    folder, ws = overlay
    _sql(folder, "DELETE FROM entries WHERE path = 'a.txt'")  # a.txt is the lower file again
    _sql(folder, "INSERT INTO entries (path, kind, mode) VALUES ('a.txt/x', 1, 493)")
    found = check_upper_folder(folder, ws.reader.tree)
    assert "'a.txt/x': its parent is not a directory of the merged view" in found
    assert len(found) == 2 and found[1].endswith("a data file no row names")  # a.txt's copy-up


def test_rows_in_a_renamed_lower_directory(overlay: tuple[Path, Workspace]) -> None:
    folder, ws = overlay
    _sql(folder, "INSERT INTO entries (path, kind, mode) VALUES ('moved/c/x', 1, 493)")  # c shows through
    assert check_upper_folder(folder, ws.reader.tree) == []
    _sql(folder, "INSERT INTO entries (path, kind, mode) VALUES ('moved/zz/x', 1, 493)")  # no zz
    _sql(folder, "INSERT INTO entries (path, kind, mode) VALUES ('sub/c/y', 1, 493)")  # sub: a whiteout
    assert check_upper_folder(folder, ws.reader.tree) == [
        "'moved/zz/x': its parent is not a directory of the merged view",
        "'sub/c/y': a directory row below the whiteout row 'sub'",
    ]


def test_file_rows_need_exactly_one_of_data_and_lower(overlay: tuple[Path, Workspace]) -> None:
    folder, ws = overlay
    data = _data_of(folder, "new.txt")
    _sql(folder, "UPDATE entries SET data = ? WHERE path = 'b2.txt'", data)  # also has lower
    _sql(folder, "UPDATE entries SET data = NULL WHERE path = 'new.txt'")
    assert check_upper_folder(folder, ws.reader.tree) == [
        "'b2.txt': a file row needs exactly one of data and lower",
        "'new.txt': a file row needs exactly one of data and lower",
    ]


def test_missing_and_unnamed_data_files(overlay: tuple[Path, Workspace]) -> None:
    folder, ws = overlay
    data = _data_of(folder, "new.txt")
    os.unlink(folder / "data" / data)
    (folder / "data" / "999999999999").write_bytes(b"")
    assert check_upper_folder(folder, ws.reader.tree) == [
        f"'new.txt': its data file data/{data} is missing",
        "data/999999999999: a data file no row names",
    ]
    # In a live overlay an empty unnamed file is a spare; one with bytes in it is not.
    assert check_upper_folder(folder, ws.reader.tree, live=True) == [
        f"'new.txt': its data file data/{data} is missing"]
    (folder / "data" / "999999999999").write_bytes(b"lost bytes")
    assert len(check_upper_folder(folder, ws.reader.tree, live=True)) == 2
