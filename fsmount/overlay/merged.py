"""The merged view of a writable mount by path: lower version tree + upper layer, every POSIX mutation.

How a path resolves (upper row, else lower tree entry) and the reading operations are in
resolve.py (PathResolver, the base class); Node, Handle and the rename rules in nodes.py.

Concurrency: every public method takes one lock, so it may be called from any thread.
WritableFS calls metadata operations on the trio thread through `inline`: there, one that
would fetch from the store (a lower tree not in the reader's memory) or copy bytes (a
copy-up) raises NeedsIO before changing anything, and is run again on a worker thread.
Everything else runs on the calling thread, local disk work included (sqlite commits, stat
of data files, pread/pwrite of copied-up files). Errors are FsError (or OSError) carrying errno.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import time
from collections.abc import Callable
from dataclasses import replace

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import FsError
from fsmount.format.objects import FileEntry
from fsmount.format.tree_edit import lookup
from fsmount.overlay.nodes import (
    Handle,
    NeedsIO,
    Node,
    check_rename,
    check_rename_flags,
    split,
)
from fsmount.overlay.resolve import PathResolver
from fsmount.overlay.upper import DIR, FILE, SYMLINK, WHITEOUT, Row, UpperLayer

log = logging.getLogger(__name__)

COPY_CHUNK = 8 * 2**20
_ACCMODE = os.O_RDONLY | os.O_WRONLY | os.O_RDWR


class MergedView(PathResolver):
    """Every mutation of the merged tree, and open files, by path (reading: PathResolver)."""

    def __init__(self, upper: UpperLayer, reader: ObjectReader, root: bytes, root_mtime_ns: int = 0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        super().__init__(upper, reader, root, root_mtime_ns, clock)
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1

    # -- lower bytes -----------------------------------------------------------------------

    def read_lower(self, e: FileEntry, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of a lower file, through the verified object cache."""
        out = bytearray()
        end = min(e.size, offset + size)
        for h, off, length, pos in e.spans():
            if pos + length <= offset or pos >= end:
                continue
            data = self.reader.read(h)
            lo, hi = max(offset, pos) - pos, min(end, pos + length) - pos
            out += memoryview(data)[off + lo : off + hi]
        return bytes(out)

    def _copy_up(self, path: str, lower: FileEntry, limit: int) -> tuple[str, int]:
        """A new data file holding the first `limit` bytes of `lower`; (name, fd)."""
        if getattr(self._inline, "on", False) and min(limit, lower.size) > 0:
            raise NeedsIO
        name, fd = self.upper.new_data_file()
        try:
            pos = 0
            limit = min(limit, lower.size)
            while pos < limit:
                chunk = self.read_lower(lower, pos, min(COPY_CHUNK, limit - pos))
                if not chunk:
                    raise FsError(errno.EIO, f"{path}: lower file shorter than its entry")
                os.pwrite(fd, chunk, pos)
                pos += len(chunk)
        except BaseException:
            os.close(fd)
            self.upper.drop_data(name)
            raise
        return name, fd

    def _materialise(self, n: Node, limit: int | None = None) -> str:
        """Copy up the file at `n` (first write, truncate): afterwards its row has a data file."""
        if n.data is not None:
            return n.data
        assert n.lower is not None
        name, fd = self._copy_up(n.path, n.lower, n.lower.size if limit is None else limit)
        try:
            os.utime(fd, ns=(n.mtime_ns, n.mtime_ns))
        finally:
            os.close(fd)
        try:
            self.upper.put(Row(n.path, FILE, n.mode, 0, data=name))
        except BaseException:
            self.upper.drop_data(name)
            raise
        self._changed()
        for h in self._handles.values():
            if h.path == n.path and h.fd is None:
                h.fd = self.upper.open_data(name)
        return name

    # -- files -----------------------------------------------------------------------------

    def _new_fh(self, h: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = h
        return fh

    def create(self, path: str, mode: int = 0o644, flags: int = os.O_RDWR) -> int:
        """Create a new regular file (EEXIST if the path exists) and open it."""
        return self.create_node(path, mode, flags)[0]

    def create_node(self, path: str, mode: int = 0o644, flags: int = os.O_RDWR) -> tuple[int, Node]:
        """create(), also returning the new file's node."""
        with self.lock:
            path = split(path)
            parent = self._parent_dir(path)
            if self._child(parent, path.rsplit("/", 1)[-1]) is not None:
                raise FsError(errno.EEXIST)
            name, fd = self.upper.new_data_file()
            row = Row(path, FILE, stat.S_IMODE(mode), 0, data=name)
            try:
                self.upper.put(row)
            except BaseException:
                os.close(fd)
                self.upper.drop_data(name)
                raise
            self._changed()
            st = os.fstat(fd)
            node = Node(path, FILE, row.mode, st.st_mtime_ns, st.st_size, data=name, row=row)
            return self._new_fh(Handle(path, fd, None, True, bool(flags & os.O_APPEND))), node

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        """Open an existing file; O_TRUNC truncates (without fetching a byte of the lower file)."""
        with self.lock:
            n = self._get(split(path))
            if n.kind == DIR:
                raise FsError(errno.EISDIR)  # directories are opened with opendir
            if n.kind == SYMLINK:
                raise FsError(errno.ELOOP)
            writable = flags & _ACCMODE != os.O_RDONLY
            if flags & os.O_TRUNC and writable:
                self._truncate_node(n, 0)
                n = self._get(n.path)
            fd = self.upper.open_data(n.data) if n.data is not None else None
            return self._new_fh(Handle(n.path, fd, n.lower, writable, bool(flags & os.O_APPEND)))

    def handle(self, fh: int) -> Handle:
        h = self._handles.get(fh)
        if h is None:
            raise FsError(errno.EBADF)
        return h

    def read(self, fh: int, offset: int, size: int) -> bytes:
        h = self.handle(fh)
        if h.fd is not None:
            return os.pread(h.fd, size, offset)
        assert h.lower is not None
        return self.read_lower(h.lower, offset, size)

    def _handle_fd(self, h: Handle) -> int:
        if h.fd is None:
            with self.lock:
                if h.fd is None:
                    if h.path is not None:
                        self._materialise(self._get(h.path))
                    else:  # unlinked before its first write: a private copy, gone at release
                        assert h.lower is not None
                        name, h.fd = self._copy_up("(unlinked)", h.lower, h.lower.size)
                        self.upper.drop_data(name)
        assert h.fd is not None
        return h.fd

    def write(self, fh: int, offset: int, data: bytes) -> int:
        h = self.handle(fh)
        if not h.writable:
            raise FsError(errno.EBADF)
        fd = self._handle_fd(h)
        if h.append:
            offset = os.fstat(fd).st_size
        return os.pwrite(fd, data, offset)

    def ftruncate(self, fh: int, size: int) -> None:
        h = self.handle(fh)
        if h.fd is None and h.path is not None:
            self.truncate(h.path, size)
            return
        os.ftruncate(self._handle_fd(h), size)

    def fsync(self, fh: int) -> None:
        h = self.handle(fh)
        if h.fd is not None:
            os.fsync(h.fd)
        self.upper.sync()

    def release(self, fh: int) -> None:
        h = self._handles.pop(fh, None)  # no lock: an event loop may call this during a commit
        if h is not None and h.fd is not None:
            os.close(h.fd)

    def _truncate_node(self, n: Node, size: int) -> None:
        if n.kind == DIR:
            raise FsError(errno.EISDIR)
        if n.kind != FILE:
            raise FsError(errno.EINVAL)
        if n.data is None:
            self._materialise(n, limit=size)
        name = self.upper.rows[n.path].data
        assert name is not None
        os.truncate(self.upper.data_path(name), size)

    def truncate(self, path: str, size: int) -> None:
        if size < 0:
            raise FsError(errno.EINVAL)
        with self.lock:
            self._truncate_node(self._get(split(path)), size)

    # -- names -------------------------------------------------------------------------------

    def _hide(self, b: object, path: str) -> None:
        """Remove `path`'s row and hide the lower entry there, if there is one (in batch `b`)."""
        if self._lower_entry(path) is not None:
            b.put(Row(path, WHITEOUT))  # type: ignore[attr-defined]
        else:
            b.delete(path)  # type: ignore[attr-defined]

    def unlink(self, path: str) -> None:
        with self.lock:
            path = split(path)
            self._parent_dir(path)
            n = self._get(path)
            if n.kind == DIR:
                raise FsError(errno.EISDIR)
            with self.upper.batch() as b:
                self._hide(b, path)
            self._changed()
            if n.data is not None:
                self.upper.drop_data(n.data)
            for h in self._handles.values():
                if h.path == path:
                    h.path = None

    def mkdir(self, path: str, mode: int = 0o755) -> Node:
        with self.lock:
            path = split(path)
            parent = self._parent_dir(path)
            if self._child(parent, path.rsplit("/", 1)[-1]) is not None:
                raise FsError(errno.EEXIST)
            opaque = self._lower_entry(path) is not None  # a whiteout was here: hide the old contents
            row = Row(path, DIR, stat.S_IMODE(mode), self.clock(), opaque=opaque)
            self.upper.put(row)
            self._changed()
            return self._node_of_row(row)

    def rmdir(self, path: str) -> None:
        with self.lock:
            path = split(path)
            self._parent_dir(path)
            n = self._get(path)
            if n.kind != DIR:
                raise FsError(errno.ENOTDIR)
            if self._names(path):
                raise FsError(errno.ENOTEMPTY)
            with self.upper.batch() as b:
                b.delete_below(path)
                self._hide(b, path)
            self._changed()

    def symlink(self, path: str, target: str) -> Node:
        with self.lock:
            path = split(path)
            parent = self._parent_dir(path)
            if not target or "\0" in target:
                raise FsError(errno.EINVAL)
            if self._child(parent, path.rsplit("/", 1)[-1]) is not None:
                raise FsError(errno.EEXIST)
            row = Row(path, SYMLINK, 0o777, self.clock(), target=target)
            self.upper.put(row)
            self._changed()
            return self._node_of_row(row)

    def link(self, old: str, new: str) -> None:
        """Hard links cannot be stored in a version's tree: refused with EPERM (docs/SEMANTICS.md)."""
        raise FsError(errno.EPERM, "hard links are not supported on fsmount overlays")

    def _row_for(self, n: Node, path: str) -> Row:
        """The row that makes node `n` appear at `path` (metadata only: no bytes move)."""
        if n.kind == DIR:
            mode, mtime = n.mode, n.mtime_ns
            return Row(path, DIR, mode, mtime, opaque=True, redirect=self._lower_dir(n.path))
        if n.kind == SYMLINK:
            return Row(path, SYMLINK, 0o777, n.mtime_ns, target=n.target)
        if n.data is not None:
            return Row(path, FILE, n.mode, 0, data=n.data)
        return Row(path, FILE, n.mode, n.mtime_ns, lower=n.lower)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        """rename(2)/renameat2: files and directories, replacing a target where POSIX allows."""
        with self.lock:
            old, new = split(old), split(new)
            check_rename_flags(flags)
            self._parent_dir(old)
            new_parent = self._parent_dir(new)
            src = self._get(old)
            if old == new:
                return
            dst = self._child(new_parent, new.rsplit("/", 1)[-1])
            full = dst is not None and dst.kind == DIR and bool(self._names(new))
            check_rename(old, new, src, dst, full, flags)
            row = self._row_for(src, new)
            with self.upper.batch() as b:
                if dst is not None and dst.kind == DIR:
                    b.delete_below(new)
                if src.kind == DIR:
                    b.move_below(old, new)
                b.put(row)
                self._hide(b, old)
            self._changed()
            if dst is not None and dst.data is not None and dst.data != src.data:
                self.upper.drop_data(dst.data)
            self._retarget_handles(old, new, replaced=dst is not None)

    def _retarget_handles(self, old: str, new: str, replaced: bool) -> None:
        """Open handles follow a rename; a handle of the replaced target keeps its file, nameless."""
        for h in self._handles.values():
            if h.path is None:
                continue
            if replaced and h.path == new:
                h.path = None
            elif h.path == old or h.path.startswith(old + "/"):
                h.path = new + h.path[len(old):]

    # -- attributes ----------------------------------------------------------------------------

    def _set_attrs(self, n: Node, mode: int | None, mtime_ns: int | None) -> None:
        row = n.row
        if mode is not None and (n.kind == SYMLINK or stat.S_IMODE(mode) == n.mode):
            mode = None  # unchanged (tar and cp set the mode create already gave): no transaction
        if n.kind == FILE and n.data is not None:
            if mtime_ns is not None:
                os.utime(self.upper.data_path(n.data), ns=(mtime_ns, mtime_ns))
            if mode is not None:
                assert row is not None
                self.upper.put(replace(row, mode=stat.S_IMODE(mode)))
                self._changed()
            return
        if mode is None and (mtime_ns is None or mtime_ns == n.mtime_ns):
            return
        if row is None:  # a lower entry: a metadata-only upper copy
            row = Row(n.path, n.kind, n.mode, n.mtime_ns, target=n.target, lower=n.lower)
        if n.kind == SYMLINK:
            mode = None
        self.upper.put(replace(
            row,
            mode=row.mode if mode is None else stat.S_IMODE(mode),
            mtime_ns=row.mtime_ns if mtime_ns is None else mtime_ns,
        ))
        self._changed()

    def chmod(self, path: str, mode: int) -> None:
        with self.lock:
            self._set_attrs(self._get(split(path)), mode, None)

    def utimens(self, path: str, mtime_ns: int | None = None) -> None:
        with self.lock:
            self._set_attrs(self._get(split(path)), None, self.clock() if mtime_ns is None else mtime_ns)

    # -- after a commit ---------------------------------------------------------------------------

    def rebase(self, root: bytes, root_mtime_ns: int) -> None:
        """The upper layer was emptied into a new version with root `root`: stand on it."""
        with self.lock:
            self.root = root
            self.root_mtime_ns = root_mtime_ns
            self._changed()
            for h in self._handles.values():
                if h.fd is None or h.path is None:
                    continue
                e = lookup(self.reader.tree, root, h.path)
                if isinstance(e, FileEntry):
                    os.close(h.fd)
                    h.fd, h.lower = None, e
