"""Check a writable mount's upper layer against the invariants of overlay/upper.py's docstring.

It reads the overlay folder itself (upper.db opened read-only, the data/ folder), not an
UpperLayer's memory mirror, so it can look at the overlay of a running daemon (`live=True`)
or of a closed one; it changes nothing. The invariants:

- a row's parent is a directory of the merged view (a directory row, or a lower directory
  that no row hides);
- no row lies below a file, symlink or whiteout row;
- a file row has exactly one of `data`, `lower` and `link`; other rows have neither `data`
  nor `lower`; a `link` names a row of the `links` table (a hard-link group), and a group's
  `nlink` is the number of rows naming it;
- every data file a row names exists, and no data file that no row names remains (in a live
  overlay, empty unnamed files are the spares create() takes, and are allowed).
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Callable
from pathlib import Path

from fsmount.format.objects import DirEntry, Tree
from fsmount.overlay.upper import DIR, FILE, SPECIAL, SYMLINK, WHITEOUT, parent_of

KIND_NAMES = {FILE: "file", DIR: "directory", SYMLINK: "symlink", WHITEOUT: "whiteout", SPECIAL: "special"}


Rows = dict[str, tuple[int, str | None, bytes | None, bool, bytes | None, str | None]]


def _rows(folder: Path) -> tuple[Rows, dict[str, tuple[str | None, int]], bytes | None]:
    """path -> (kind, data, lower, opaque, redirect, link); group -> (data, nlink); the lower
    root; from upper.db."""
    db = sqlite3.connect(f"file:{folder / 'upper.db'}?mode=ro", uri=True)
    try:
        rows = {
            str(path): (int(kind), data, lower, bool(opaque), redirect, link)
            for path, kind, data, lower, opaque, redirect, link in db.execute(
                "SELECT path, kind, data, lower, opaque, redirect, link FROM entries")
        }
        groups = {str(g): (data, int(nlink)) for g, data, nlink in db.execute(
            "SELECT path, data, nlink FROM links")}
        meta = dict(db.execute("SELECT key, value FROM meta"))
    finally:
        db.close()
    root = meta.get("root")
    return rows, groups, bytes.fromhex(root) if root else None


def check_upper_folder(folder: str | os.PathLike[str], tree: Callable[[bytes], Tree], *,
                       live: bool = False) -> list[str]:
    """Every broken invariant of the overlay in `folder`, one line each (empty: all hold).

    `tree` reads a lower tree by hash (ObjectReader.tree). `live`: the overlay may be in use.
    """
    folder = Path(folder)
    problems: list[str] = []
    try:
        rows, groups, root = _rows(folder)
    except sqlite3.Error as e:
        return [f"{folder}: cannot read upper.db: {e}"]
    lower_memo: dict[str, bytes | None] = {}

    def lower_dir(path: str) -> bytes | None:
        """The lower tree showing through directory `path` (as MergedView resolves it)."""
        if path in lower_memo:
            return lower_memo[path]
        row = rows.get(path)
        result: bytes | None
        if row is not None and (row[0] != DIR or row[3] or row[4]):
            result = row[4] if row[0] == DIR else None
        elif not path:
            result = root
        else:
            pt = lower_dir(parent_of(path))
            e = tree(pt).get(path.rsplit("/", 1)[-1]) if pt is not None else None
            result = e.tree if isinstance(e, DirEntry) else None
        lower_memo[path] = result
        return result

    def is_dir(path: str) -> bool:
        """Whether `path` is a directory of the merged view."""
        while path:
            row = rows.get(path)
            if row is not None:
                if row[0] != DIR:
                    return False
            else:
                pt = lower_dir(parent_of(path))
                e = tree(pt).get(path.rsplit("/", 1)[-1]) if pt is not None else None
                if not isinstance(e, DirEntry):
                    return False
            path = parent_of(path)
        return True

    named: set[str] = set()
    for path in sorted(rows):
        kind, data, lower, _, _, link = rows[path]
        what = KIND_NAMES.get(kind, f"kind {kind}")
        if kind not in KIND_NAMES:
            problems.append(f"{path!r}: unknown row kind {kind}")
        if path:
            ancestor = parent_of(path)
            while ancestor and ancestor not in rows:
                ancestor = parent_of(ancestor)
            if ancestor and rows[ancestor][0] != DIR:
                problems.append(f"{path!r}: a {what} row below the {KIND_NAMES.get(rows[ancestor][0])}"
                                f" row {ancestor!r}")
            elif not is_dir(parent_of(path)):
                problems.append(f"{path!r}: its parent is not a directory of the merged view")
        elif kind != DIR:
            problems.append(f"the root row is a {what}, not a directory")
        if link is not None:
            if data is not None or lower is not None:
                problems.append(f"{path!r}: a row naming a hard-link group with its own data or lower")
            if link not in groups:
                problems.append(f"{path!r}: its hard-link group {link} has no row")
        elif kind == FILE and (data is None) == (lower is None):
            problems.append(f"{path!r}: a file row needs exactly one of data and lower")
        if kind != FILE and (data is not None or lower is not None):
            problems.append(f"{path!r}: a {what} row with data or lower")
        if data is not None:
            named.add(data)
            if not os.path.isfile(folder / "data" / data):
                problems.append(f"{path!r}: its data file data/{data} is missing")
    for group, (data, nlink) in sorted(groups.items()):
        names = sum(1 for r in rows.values() if r[5] == group)
        if names != nlink:
            problems.append(f"hard-link group {group}: {names} row(s) name it, its link count is {nlink}")
        if data is not None:
            named.add(data)
            if not os.path.isfile(folder / "data" / data):
                problems.append(f"hard-link group {group}: its data file data/{data} is missing")
    try:
        present = os.listdir(folder / "data")
    except FileNotFoundError:
        present = []
    for name in sorted(set(present) - named):
        if live and os.path.getsize(folder / "data" / name) == 0:
            continue  # a spare, kept ready for create()
        problems.append(f"data/{name}: a data file no row names")
    return problems
