"""Rows of an overlay's upper layer: the Row record, its kinds and its sqlite form (schema 3).

Two tables hold rows of the same shape (docs/SEMANTICS.md, "The upper layer"):

    entries   one row per path the overlay changes (`path` is the path)
    links     one row per hard-link group the overlay knows (`path` is the group id, 32 hex
              digits): the shared inode of every path whose entry row names it in `link`

Columns (both tables):
    path      'a/b/c' (no leading '/'; '' is the root, which only keeps attrs) or a group id
    kind      0 file, 1 dir, 2 symlink, 3 whiteout (hides a lower path), 4 special (fifo,
              socket, device: `mode` holds the whole st_mode, `rdev` the device number)
    mode      permission bits (files, dirs), the whole st_mode (specials)
    mtime_ns  dirs, symlinks, specials and lower-referencing files (data files: fstat)
    target    symlink target
    data      file whose bytes live in data/<data> (size, mtime, atime: fstat)
    lower     a lower FileEntry, as format.objects.encode_file_entry writes it: a metadata-only
              copy of a lower file. Validated on read.
    opaque    dir: 1 = lower entries at this path do not show through
    redirect  dir: lower tree whose entries show through (a renamed lower dir)
    uid, gid  owner; NULL = the mounting user (or group)                       (schema 3)
    ctime_ns  last change of the inode's attributes; 0 = its mtime             (schema 3)
    atime_ns  last access set by utimens; 0 = its mtime (data files: fstat)    (schema 3)
    rdev      device number of a special row                                   (schema 3)
    link      entries: the hard-link group this path is a name of (then the   (schema 3)
              row's other fields are unused: the group's row holds the inode)
    nlink     links: how many names the group has in the merged view          (schema 3)
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from fsmount.errors import FormatError
from fsmount.format.objects import FileEntry, decode_file_entry, encode_file_entry

FILE, DIR, SYMLINK, WHITEOUT, SPECIAL = 0, 1, 2, 3, 4
SCHEMA_VERSION = 3  # 3: owners, ctime, atime, specials, hard-link groups; 2: `lower` in tree form

COLUMNS = ("path", "kind", "mode", "mtime_ns", "target", "data", "lower", "opaque", "redirect",
           "uid", "gid", "ctime_ns", "atime_ns", "rdev", "link", "nlink")
# columns schema 3 added, for ALTER TABLE on an older overlay
ADDED_COLUMNS = ("uid INTEGER", "gid INTEGER", "ctime_ns INTEGER NOT NULL DEFAULT 0",
                 "atime_ns INTEGER NOT NULL DEFAULT 0", "rdev INTEGER NOT NULL DEFAULT 0", "link TEXT",
                 "nlink INTEGER NOT NULL DEFAULT 1")

_BASE_COLUMNS = ("path TEXT PRIMARY KEY", "kind INTEGER NOT NULL", "mode INTEGER NOT NULL DEFAULT 0",
                 "mtime_ns INTEGER NOT NULL DEFAULT 0", "target TEXT", "data TEXT", "lower BLOB",
                 "opaque INTEGER NOT NULL DEFAULT 0", "redirect BLOB")


def _table(name: str, columns: tuple[str, ...], suffix: str = "") -> str:
    return f"CREATE TABLE IF NOT EXISTS {name} (\n    " + ",\n    ".join(columns) + f"\n){suffix};\n"


META_TABLE = "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);\n"
# the form of schema 1 (an older overlay is migrated from it: LINKS_TABLE, then ADDED_COLUMNS)
SCHEMA = META_TABLE + _table("entries", _BASE_COLUMNS)
LINKS_TABLE = _table("links", _BASE_COLUMNS)
# a new overlay: every column, and WITHOUT ROWID (one b-tree keyed by path instead of a table plus
# an index: a row change writes fewer pages; measured 20 % less per transaction)
NEW_SCHEMA = META_TABLE + "".join(_table(t, _BASE_COLUMNS + ADDED_COLUMNS, " WITHOUT ROWID")
                                  for t in ("entries", "links"))
SELECT = ", ".join(COLUMNS)
INSERT = f"INSERT OR REPLACE INTO {{table}} ({SELECT}) VALUES ({', '.join('?' * len(COLUMNS))})"
# a row already there is changed in place (no delete and insert: fewer pages written)
UPDATE = f"UPDATE {{table}} SET {', '.join(f'{c} = ?' for c in COLUMNS[1:])} WHERE path = ?"


@dataclass(slots=True, frozen=True)
class Row:
    """One upper entry, or one hard-link group (see the module docstring for the fields)."""

    path: str
    kind: int
    mode: int = 0
    mtime_ns: int = 0
    target: str | None = None
    data: str | None = None
    lower: FileEntry | None = None
    opaque: bool = False
    redirect: bytes | None = None
    uid: int | None = None
    gid: int | None = None
    ctime_ns: int = 0
    atime_ns: int = 0
    rdev: int = 0
    link: str | None = None
    nlink: int = 1

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def moved(self, path: str) -> Row:
        return replace(self, path=path)


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def row_values(r: Row) -> tuple[object, ...]:
    return (r.path, r.kind, r.mode, r.mtime_ns, r.target, r.data,
            None if r.lower is None else encode_file_entry(r.lower), int(r.opaque), r.redirect,
            r.uid, r.gid, r.ctime_ns, r.atime_ns, r.rdev, r.link, r.nlink)


def row_from(values: tuple[Any, ...]) -> Row:
    path, kind, mode, mtime, target, data, lower, opaque, redirect = values[:9]
    uid, gid, ctime, atime, rdev, link, nlink = values[9:]
    if not isinstance(lower, bytes | None):
        raise FormatError(f"malformed lower entry of {path!r}")
    if link is not None and (not isinstance(link, str) or len(link) != 32):
        raise FormatError(f"malformed link group of {path!r}")
    return Row(str(path), int(kind), int(mode), int(mtime), target, data,
               None if lower is None else decode_file_entry(lower), bool(opaque), redirect,
               None if uid is None else int(uid), None if gid is None else int(gid), int(ctime), int(atime),
               int(rdev), link, int(nlink))
