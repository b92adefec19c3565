"""The durable upper layer of a writable mount: a sqlite table of entries by path, plus data files.

Layout of an overlay folder:

    upper.db        sqlite (WAL). Table `entries`, one row per path the overlay changes:
                      path      'a/b/c' (no leading '/'; '' is the root, which only keeps attrs)
                      kind      0 file, 1 dir, 2 symlink, 3 whiteout (hides a lower path)
                      mode      permission bits (files, dirs)
                      mtime_ns  dirs, symlinks and lower-referencing files (data files: fstat)
                      target    symlink target
                      data      file whose bytes live in data/<data> (size and mtime: fstat)
                      lower     a lower FileEntry, as format.objects.encode_file_entry writes it (the
                                entry's positional array in a tree; rows of older overlays hold an
                                8-element form, still read): a metadata-only copy of a lower file
                                (renamed, chmod'ed, touched): no bytes copied. Validated on read.
                      opaque    dir: 1 = lower entries at this path do not show through
                      redirect  dir: lower tree whose entries show through (a renamed lower dir)
                    Table `meta`: base (version id the overlay stands on), root (its root tree,
                    hex), committing (draft id of a commit under way, for crash-safe retry),
                    schema (SCHEMA_VERSION that made the overlay; a newer one is refused).
    data/<name>     contents of copied-up and new files, written with plain pwrite; names are
                    increasing numbers; a few empty spares are kept ready by a thread.
    lock            flock'ed by the one process using the overlay.
    reserve         256 KiB freed when the disk is full, so metadata changes still fit.

Invariants: a row's parent is a directory of the merged view; no row lies below a
file, symlink or whiteout row; a file row has exactly one of `data` and `lower`.
Every change of rows is one sqlite transaction; write() never touches sqlite. With
synchronous=NORMAL a committed transaction survives kill -9 of the process (an OS
crash may lose the last ones unless fsync() was called, which syncs the WAL too).
All rows are mirrored in memory (`rows`, `children`) so lookups never query sqlite.
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
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, cast

from fsmount.config import data_home
from fsmount.errors import FormatError, FsError, UsageError
from fsmount.format.objects import FileEntry, decode_file_entry, encode_file_entry

log = logging.getLogger(__name__)

FILE, DIR, SYMLINK, WHITEOUT = 0, 1, 2, 3
SCHEMA_VERSION = 2  # 2: `lower` holds a file entry in its tree form (1: an 8-element form)
SPARES = 32  # empty data files kept ready for create()
RESERVE_BYTES = 256 * 1024  # freed when the disk is full, so unlink and rename still work

_SCHEMA = """
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT);
CREATE TABLE IF NOT EXISTS entries (
    path TEXT PRIMARY KEY,
    kind INTEGER NOT NULL,
    mode INTEGER NOT NULL DEFAULT 0,
    mtime_ns INTEGER NOT NULL DEFAULT 0,
    target TEXT,
    data TEXT,
    lower BLOB,
    opaque INTEGER NOT NULL DEFAULT 0,
    redirect BLOB
);
"""


@dataclass(slots=True, frozen=True)
class Row:
    """One upper entry (see the module docstring for the fields)."""

    path: str
    kind: int
    mode: int = 0
    mtime_ns: int = 0
    target: str | None = None
    data: str | None = None
    lower: FileEntry | None = None
    opaque: bool = False
    redirect: bytes | None = None

    @property
    def name(self) -> str:
        return self.path.rsplit("/", 1)[-1]

    def moved(self, path: str) -> Row:
        return replace(self, path=path)


def parent_of(path: str) -> str:
    return path.rsplit("/", 1)[0] if "/" in path else ""


def _row_values(r: Row) -> tuple[object, ...]:
    return (r.path, r.kind, r.mode, r.mtime_ns, r.target, r.data,
            None if r.lower is None else encode_file_entry(r.lower), int(r.opaque), r.redirect)


def _row_from(values: tuple[Any, ...]) -> Row:
    path, kind, mode, mtime, target, data, lower, opaque, redirect = values
    if not isinstance(lower, bytes | None):
        raise FormatError(f"malformed lower entry of {path!r}")
    return Row(str(path), int(kind), int(mode), int(mtime), target, data,
               None if lower is None else decode_file_entry(lower), bool(opaque), redirect)


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


class UpperLayer:
    """The rows and data files of one overlay folder; thread-safe for row changes."""

    def __init__(self, folder: str | os.PathLike[str]) -> None:
        self.folder = Path(folder)
        self.data_dir = self.folder / "data"
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        if self.folder.stat().st_uid == os.geteuid() and self.folder.stat().st_mode & 0o077:
            os.chmod(self.folder, 0o700)
        self.data_dir.mkdir(exist_ok=True, mode=0o700)
        self._data_prefix = f"{self.data_dir}/"
        self.db_path = self.folder / "upper.db"
        self._lock = threading.RLock()
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
            self.db.executescript(_SCHEMA)
        except sqlite3.Error as e:
            os.close(self._lock_fd)
            raise UsageError(f"cannot open overlay {self.folder}: {e}") from None
        self.rows: dict[str, Row] = {}
        # names below each directory that are rows, or ancestors of rows (then not in `rows`)
        self.children: dict[str, set[str]] = {}
        self._below_count: dict[str, int] = {}
        try:
            self.meta: dict[str, str] = dict(self.db.execute("SELECT key, value FROM meta"))
            self._check_schema()
            for values in self.db.execute("SELECT path, kind, mode, mtime_ns, target, data, lower, opaque, "
                                          "redirect FROM entries"):
                try:
                    self._mem_put(_row_from(values))
                except (FormatError, TypeError, ValueError) as e:
                    raise FormatError(f"overlay {self.folder}: damaged entry {values[0]!r}: {e}") from None
        except BaseException:
            self.db.close()
            os.close(self._lock_fd)
            raise
        self._remove_orphans()
        self._reserved = False
        self._keep_reserve()
        self._closed = False
        self._spares: list[tuple[str, int]] = []
        self._want_spares = threading.Event()
        self._want_spares.set()
        self._spare_thread = threading.Thread(target=self._make_spares, name="overlay-spares", daemon=True)
        self._spare_thread.start()

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
            self.set_meta(schema=str(SCHEMA_VERSION))

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
        if row.path not in self.rows:
            self._count(row.path, +1)
        self.rows[row.path] = row

    def _mem_delete(self, path: str) -> None:
        if self.rows.pop(path, None) is not None:
            self._count(path, -1)

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
                if e.errno != errno.ENOSPC or not self._release_reserve():
                    raise
                mem = run()  # the reserve made room: an unlink or rename must work on a full disk
            self._keep_reserve()
            for op, arg in mem:
                if op == "put":
                    self._mem_put(arg)  # type: ignore[arg-type]
                else:
                    self._mem_delete(arg)  # type: ignore[arg-type]

    def _sql(self, op: str, arg: object) -> list[tuple[str, object]]:
        """Run one batch op in the open transaction; return the memory changes it implies."""
        if op == "put":
            row = arg
            assert isinstance(row, Row)
            self.db.execute("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            _row_values(row))
            return [("put", row)]
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
        self.db.executemany("INSERT OR REPLACE INTO entries VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)",
                            [_row_values(r) for r in moved])
        return [("delete", r.path) for r in rows] + [("put", r) for r in moved]

    def put(self, row: Row) -> None:
        with self.batch() as b:
            b.put(row)

    def delete(self, path: str) -> None:
        with self.batch() as b:
            b.delete(path)

    # -- space reserve ----------------------------------------------------------------------

    def _release_reserve(self) -> bool:
        """Free the reserve file so a metadata change fits on a full disk; False if there is none."""
        if not self._reserved:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / "reserve")
        self._reserved = False
        log.warning("overlay %s is out of space: used its reserve for metadata", self.folder)
        return True

    def _keep_reserve(self) -> None:
        if self._reserved:
            return
        try:
            fd = os.open(self.folder / "reserve", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            self._reserved = True
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / "reserve")

    # -- data files ------------------------------------------------------------------------

    def data_path(self, name: str) -> str:
        return self._data_prefix + name

    def new_data_file(self) -> tuple[str, int]:
        """An empty data file; returns (name, fd opened read-write).

        Names are increasing numbers (ext4 creates them ~10x faster than random names). A
        background thread keeps a few empty files ready, so a create() does not wait for the
        disk; spares never used are orphans, removed at the next open.
        """
        with self._lock:
            spare = self._spares.pop() if self._spares else None
            if len(self._spares) < SPARES // 2:
                self._want_spares.set()
        return spare if spare is not None else self._create_data_file()

    def _create_data_file(self) -> tuple[str, int]:
        while True:
            with self._lock:
                self._next_data += 1
                name = f"{self._next_data:012d}"
            try:
                fd = os.open(self.data_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            return name, fd

    def _make_spares(self) -> None:
        while not self._closed:
            self._want_spares.wait()
            self._want_spares.clear()
            while not self._closed and len(self._spares) < SPARES:
                try:
                    spare = self._create_data_file()
                except OSError:
                    break  # out of space or fds: create() makes its own and reports the error
                with self._lock:
                    if self._closed:  # made while closing: no row will ever name it
                        os.close(spare[1])
                        self.drop_data(spare[0])
                        return
                    self._spares.append(spare)

    def open_data(self, name: str) -> int:
        return os.open(self.data_path(name), os.O_RDWR | os.O_CLOEXEC)

    def drop_data(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.data_path(name))

    def _remove_orphans(self) -> None:
        """Data files no row names: left by a crash between creating a file and recording it."""
        used = {r.data for r in self.rows.values() if r.data}
        names = os.listdir(self.data_dir)
        self._next_data = max((int(n) for n in [*names, *used] if n.isdigit()), default=0)
        for name in names:
            if name not in used:
                log.info("removing orphan overlay data file %s", name)
                self.drop_data(name)

    def sync(self) -> None:
        """Make every committed row change durable (fsync of the WAL and the data folder)."""
        for p in (f"{self.db_path}-wal", str(self.db_path), str(self.data_dir)):
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    # -- whole layer --------------------------------------------------------------------------

    def is_empty(self) -> bool:
        return not any(p for p in self.rows)

    def reset(self, version_id: str, root: bytes) -> None:
        """Empty the layer and stand on `version_id` (after a commit made it, or a discard)."""
        names = [r.data for r in self.rows.values() if r.data]
        with self._lock:
            with self._txn():
                self.db.execute("DELETE FROM entries")
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('base', ?)", (version_id,))
                self.db.execute("INSERT OR REPLACE INTO meta VALUES ('root', ?)", (root.hex(),))
                self.db.execute("DELETE FROM meta WHERE key = 'committing'")
            self.rows.clear()
            self.children.clear()
            self._below_count.clear()
            self.meta.update(base=version_id, root=root.hex())
            self.meta.pop("committing", None)
        for name in names:
            self.drop_data(name)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        self._want_spares.set()
        if self._spare_thread is not threading.current_thread():
            self._spare_thread.join()
        for name, fd in spares:
            os.close(fd)
            self.drop_data(name)
        with contextlib.suppress(sqlite3.Error):
            self.db.close()
        if self._lock_fd >= 0:
            os.close(self._lock_fd)  # releases the flock
            self._lock_fd = -1
