"""The durable upper layer of a writable mount: sqlite rows by path (overlay/rows.py), plus data files.

Layout of an overlay folder:

    upper.db        sqlite (WAL). Tables `entries` (one row per path the overlay changes) and
                    `links` (one row per hard-link group), columns in overlay/rows.py. Table
                    `meta`: base (version id the overlay stands on), root (its root tree, hex),
                    committing (draft id of a commit under way, for crash-safe retry), schema
                    (SCHEMA_VERSION that made the overlay; a newer one is refused).
    data/<name>     contents of copied-up and new files, written with plain pwrite
                    (overlay/datafiles.py: names, spares, the reserve).
    lock            flock'ed by the one process using the overlay.
    reserve         256 KiB freed when the disk is full, so metadata changes still fit.

Invariants: a row's parent is a directory of the merged view; no row lies below a
file, symlink, special or whiteout row; a file row has exactly one of `data`, `lower` and
`link`, and a `link` names a row of `links`, whose `nlink` counts the names of the group.
Every change of rows is one sqlite transaction; write() never touches sqlite. With
synchronous=NORMAL a committed transaction survives kill -9 of the process (an OS
crash may lose the last ones unless fsync() was called, which syncs the WAL too). WAL
checkpoints run on a thread of their own (overlay/wal.py), never inside a change; a row
already there is changed in place (UPDATE), a new overlay's tables are WITHOUT ROWID.
All rows are mirrored in memory (`rows`, `children`, `links`, `members`) so lookups never
query sqlite.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import hashlib
import logging
import os
import sqlite3
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import cast

from fsmount import config
from fsmount.config import data_home
from fsmount.errors import FormatError, FsError, UsageError
from fsmount.overlay.datafiles import RESERVE_BYTES, SPARES, DataFiles
from fsmount.overlay.rows import (
    ADDED_COLUMNS,
    DIR,
    FILE,
    INSERT,
    LINKS_TABLE,
    NEW_SCHEMA,
    SCHEMA,
    SCHEMA_VERSION,
    SELECT,
    SPECIAL,
    SYMLINK,
    UPDATE,
    WHITEOUT,
    Row,
    parent_of,
    row_from,
    row_values,
)
from fsmount.overlay.wal import Checkpointer

__all__ = ["DIR", "FILE", "RESERVE_BYTES", "SPARES", "SPECIAL", "SYMLINK", "WHITEOUT", "Batch", "Row",
           "UpperLayer", "default_overlay_dir", "new_link_id", "parent_of"]

log = logging.getLogger(__name__)


def new_link_id() -> str:
    """A new hard-link group id: 16 random bytes in hex (unique across versions, FORMAT.md §4)."""
    return os.urandom(16).hex()


def default_overlay_dir(store_url: str, mountpoint: str) -> Path:
    """$XDG_DATA_HOME/fsmount/overlays/<key>, one per (store, mountpoint): a remount finds it again."""
    key = hashlib.sha256(f"{store_url}\0{os.path.realpath(mountpoint)}".encode()).hexdigest()[:20]
    return data_home() / "overlays" / key


def _sql_errno(e: sqlite3.Error) -> FsError:
    text = str(e)
    err = errno.ENOSPC if "full" in text else errno.EIO
    return FsError(err, f"overlay database: {text}")


class Batch:
    """Row changes collected inside `UpperLayer.batch()`, applied in one transaction."""

    def __init__(self) -> None:
        self.ops: list[tuple[str, object]] = []

    def put(self, row: Row) -> None:
        self.ops.append(("put", row))

    def delete(self, path: str) -> None:
        self.ops.append(("delete", path))

    def delete_below(self, path: str) -> None:
        """Every row strictly below directory `path`."""
        self.ops.append(("delete_below", path))

    def move_below(self, old: str, new: str) -> None:
        """Rows strictly below `old` move below `new`, keeping their relative paths."""
        self.ops.append(("move_below", (old, new)))

    def put_link(self, row: Row) -> None:
        """A hard-link group's row (its `path` is the group id)."""
        self.ops.append(("put_link", row))

    def delete_link(self, group: str) -> None:
        self.ops.append(("delete_link", group))

    def has_link(self, group: str) -> bool:
        """Whether this batch already changes the row of hard-link group `group`."""
        return any(op in ("put_link", "delete_link") and (arg == group or getattr(arg, "path", None) == group)
                   for op, arg in self.ops)


class UpperLayer:
    """The rows and data files of one overlay folder; thread-safe for row changes."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        config.private_dir(self.folder, "overlay folder")
        self.db_path = self.folder / "upper.db"
        self._lock = threading.RLock()
        self.checkpointer = Checkpointer(self.db_path)
        self.files = DataFiles(self.folder, self._lock)
        self.data_dir = self.files.data_dir
        self._lock_fd = os.open(self.folder / "lock", os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
        try:
            fcntl.flock(self._lock_fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            os.close(self._lock_fd)
            raise UsageError(f"overlay {self.folder} is in use by another fsmount process") from None
        try:
            self.db = sqlite3.connect(self.db_path, isolation_level=None, check_same_thread=False)
            self.db.execute("PRAGMA journal_mode=WAL")
            self.db.execute("PRAGMA synchronous=NORMAL")
            self.db.execute("PRAGMA wal_autocheckpoint=0")  # overlay/wal.py checkpoints on its own thread
            new = self.db.execute("SELECT 1 FROM sqlite_master WHERE name = 'entries'").fetchone() is None
            self.db.executescript(NEW_SCHEMA if new else SCHEMA)
            if new:
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('schema', ?)", (str(SCHEMA_VERSION),))
        except sqlite3.Error as e:
            os.close(self._lock_fd)
            raise UsageError(f"cannot open overlay {self.folder}: {e}") from None
        self.rows: dict[str, Row] = {}
        # names below each directory that are rows, or ancestors of rows (then not in `rows`)
        self.children: dict[str, set[str]] = {}
        self._below_count: dict[str, int] = {}
        self.links: dict[str, Row] = {}  # hard-link group id -> its row
        self.members: dict[str, set[str]] = {}  # hard-link group id -> paths of the rows naming it
        try:
            self.meta: dict[str, str] = dict(self.db.execute("SELECT key, value FROM meta"))
            self._check_schema()
            for table, put in (("entries", self._mem_put), ("links", self._mem_put_link)):
                for values in self.db.execute(f"SELECT {SELECT} FROM {table}"):
                    try:
                        put(row_from(values))
                    except (FormatError, TypeError, ValueError) as e:
                        raise FormatError(f"overlay {self.folder}: damaged entry {values[0]!r}: {e}"
                                          ) from None
        except sqlite3.Error as e:
            self.db.close()
            os.close(self._lock_fd)
            raise UsageError(f"cannot open overlay {self.folder}: {e}") from None
        except BaseException:
            self.db.close()
            os.close(self._lock_fd)
            raise
        self._closed = False
        self.checkpointer.start()
        self.files.start([r.data for r in (*self.rows.values(), *self.links.values()) if r.data])

    # -- meta ---------------------------------------------------------------------------

    def _check_schema(self) -> None:
        """Refuse an overlay made by a newer fsmount; mark an older one as this schema (rows of
        schema 1 are read as they are, new rows are written in the current form)."""
        raw = self.meta.get("schema", "1")
        schema = int(raw) if raw.isdigit() else SCHEMA_VERSION + 1
        if schema > SCHEMA_VERSION:
            raise UsageError(f"overlay {self.folder} was made by a newer fsmount (schema {raw}, this one"
                             f" reads {SCHEMA_VERSION}): upgrade fsmount")
        if schema < SCHEMA_VERSION:
            self._migrate()
            self.set_meta(schema=str(SCHEMA_VERSION))

    def _migrate(self) -> None:
        """Schema 3: the `links` table, and the columns it added to `entries` (defaults: none set)."""
        with self._lock, self._txn():
            self.db.execute(LINKS_TABLE)
            for table in ("entries", "links"):
                have = {r[1] for r in self.db.execute(f"PRAGMA table_info({table})")}
                for col in ADDED_COLUMNS:
                    if col.split()[0] not in have:
                        self.db.execute(f"ALTER TABLE {table} ADD COLUMN {col}")

    @property
    def base(self) -> str | None:
        return self.meta.get("base")

    @property
    def root(self) -> bytes | None:
        r = self.meta.get("root")
        return bytes.fromhex(r) if r else None

    @property
    def committing(self) -> str | None:
        return self.meta.get("committing") or None

    def set_meta(self, **values: str | None) -> None:
        with self._lock, self._txn():
            for k, v in values.items():
                if v is None:
                    self.db.execute("DELETE FROM meta WHERE key = ?", (k,))
                else:
                    self.db.execute("INSERT OR REPLACE INTO meta (key, value) VALUES (?, ?)", (k, v))
        for k, v in values.items():
            if v is None:
                self.meta.pop(k, None)
            else:
                self.meta[k] = v

    def bind(self, version_id: str, root: bytes) -> None:
        """Stand on `version_id`; refuse an overlay with changes that stands on another version.

        An empty overlay simply moves to `version_id` (e.g. a newer version of the same REF).
        """
        if self.base is None:
            self.set_meta(base=version_id, root=root.hex())
        elif self.base != version_id and self.is_empty() and not self.committing:
            self.reset(version_id, root)
        elif self.base != version_id:
            raise UsageError(
                f"overlay {self.folder} stands on version {self.base}, not {version_id}:"
                f" mount {self.base} to keep its changes, or use another --overlay"
            )

    # -- rows ---------------------------------------------------------------------------

    def _mem_put(self, row: Row) -> None:
        old = self.rows.get(row.path)
        if old is None:
            self._count(row.path, +1)
        elif old.link is not None:
            self._unmember(old)
        self.rows[row.path] = row
        if row.link is not None:
            self.members.setdefault(row.link, set()).add(row.path)

    def _mem_delete(self, path: str) -> None:
        old = self.rows.pop(path, None)
        if old is not None:
            self._count(path, -1)
            if old.link is not None:
                self._unmember(old)

    def _unmember(self, row: Row) -> None:
        assert row.link is not None
        paths = self.members.get(row.link)
        if paths is not None:
            paths.discard(row.path)
            if not paths:
                del self.members[row.link]

    def _mem_put_link(self, row: Row) -> None:
        self.links[row.path] = row

    def _count(self, path: str, inc: int) -> None:
        """Keep `children` naming every row and every ancestor directory of a row."""
        while path:
            n = self._below_count.get(path, 0) + inc
            parent, name = parent_of(path), path.rsplit("/", 1)[-1]
            if n:
                self._below_count[path] = n
                if n == inc:
                    self.children.setdefault(parent, set()).add(name)
            else:
                del self._below_count[path]
                kids = self.children[parent]
                kids.discard(name)
                if not kids:
                    del self.children[parent]
            path = parent

    def below(self, path: str) -> list[Row]:
        """Rows strictly below directory `path`, parents before children."""
        out: list[Row] = []
        stack = [path]
        while stack:
            p = stack.pop()
            for name in sorted(self.children.get(p, ())):
                child = f"{p}/{name}" if p else name
                if child in self.rows:
                    out.append(self.rows[child])
                stack.append(child)
        return out

    @contextlib.contextmanager
    def _txn(self) -> Iterator[None]:
        try:
            self.db.execute("BEGIN IMMEDIATE")
            try:
                yield
            except BaseException:
                self.db.execute("ROLLBACK")
                raise
            self.db.execute("COMMIT")
            self.checkpointer.poke()
        except sqlite3.Error as e:
            with contextlib.suppress(sqlite3.Error):
                self.db.execute("ROLLBACK")
            raise _sql_errno(e) from None

    @contextlib.contextmanager
    def batch(self) -> Iterator[Batch]:
        """Collect row changes; on exit they are written in one transaction, then mirrored in memory."""
        b = Batch()
        yield b
        with self._lock:
            def run() -> list[tuple[str, object]]:
                mem: list[tuple[str, object]] = []
                with self._txn():
                    for op, arg in b.ops:
                        mem.extend(self._sql(op, arg))
                return mem

            try:
                mem = run()
            except FsError as e:
                if e.errno != errno.ENOSPC or not self.files.release_reserve():
                    raise
                mem = run()  # the reserve made room: an unlink or rename must work on a full disk
            self.files.keep_reserve()
            for op, arg in mem:
                if op == "put":
                    self._mem_put(arg)  # type: ignore[arg-type]
                elif op == "put_link":
                    self._mem_put_link(arg)  # type: ignore[arg-type]
                elif op == "delete_link":
                    self.links.pop(arg, None)  # type: ignore[call-overload]
                else:
                    self._mem_delete(arg)  # type: ignore[arg-type]

    def _sql(self, op: str, arg: object) -> list[tuple[str, object]]:
        """Run one batch op in the open transaction; return the memory changes it implies."""
        if op in ("put", "put_link"):
            row = arg
            assert isinstance(row, Row)
            table, known = ("entries", self.rows) if op == "put" else ("links", self.links)
            values = row_values(row)
            # a row already there changes in place (the memory mirror shows the rows as they were
            # before this batch, which may have deleted it: hence the count check)
            if row.path not in known or self.db.execute(UPDATE.format(table=table),
                                                        (*values[1:], row.path)).rowcount != 1:
                self.db.execute(INSERT.format(table=table), values)
            return [(op, row)]
        if op == "delete_link":
            self.db.execute("DELETE FROM links WHERE path = ?", (arg,))
            return [(op, arg)]
        if op == "delete":
            self.db.execute("DELETE FROM entries WHERE path = ?", (arg,))
            return [("delete", arg)]
        if op == "delete_below":
            rows = self.below(str(arg))
            self.db.executemany("DELETE FROM entries WHERE path = ?", [(r.path,) for r in rows])
            return [("delete", r.path) for r in rows]
        old, new = cast(tuple[str, str], arg)
        rows = self.below(old)
        moved = [r.moved(new + r.path[len(old):]) for r in rows]
        self.db.executemany("DELETE FROM entries WHERE path = ?", [(r.path,) for r in rows])
        self.db.executemany(INSERT.format(table="entries"), [row_values(r) for r in moved])
        return [("delete", r.path) for r in rows] + [("put", r) for r in moved]

    def put(self, row: Row) -> None:
        with self.batch() as b:
            b.put(row)

    def delete(self, path: str) -> None:
        with self.batch() as b:
            b.delete(path)

    # -- data files (overlay/datafiles.py) ---------------------------------------------------

    def data_path(self, name: str) -> str:
        return self.files.data_path(name)

    def new_data_file(self) -> tuple[str, int]:
        return self.files.new_data_file()

    def open_data(self, name: str) -> int:
        return self.files.open_data(name)

    def drop_data(self, name: str) -> None:
        self.files.drop_data(name)

    def drop_data_later(self, name: str) -> None:
        self.files.drop_data_later(name)

    def sync(self) -> None:
        """Make every committed row change durable (fsync of the WAL and the data folder)."""
        self.files.sync(self.db_path)

    # -- whole layer --------------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not any(p for p in self.rows)

    def reset(self, version_id: str, root: bytes) -> None:
        """Empty the layer and stand on `version_id` (after a commit made it, or a discard)."""
        names = [r.data for r in (*self.rows.values(), *self.links.values()) if r.data]
        with self._lock:
            with self._txn():
                self.db.execute("DELETE FROM entries")
                self.db.execute("DELETE FROM links")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('base', ?)", (version_id,))
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('root', ?)", (root.hex(),))
                self.db.execute("DELETE FROM meta WHERE key = 'committing'")
            self.rows.clear()
            self.links.clear()
            self.members.clear()
            self.children.clear()
            self._below_count.clear()
            self.meta.update(base=version_id, root=root.hex())
            self.meta.pop("committing", None)
        for name in names:
            self.drop_data(name)

    def close(self) -> None:
        with self._lock:
            self._closed = True
        self.files.close()
        self.checkpointer.close()
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
