"""Open files of a writable mount's merged view: handles, copy-up of lower files, reads and writes.

A hard-link group's bytes are its group row's (a data file, or a lower entry until the first
write copies it up once for every name of the group). pread/pwrite of data files are plain
system calls here: WritableFS calls them off the event loop (fs/writable.py).
"""

from __future__ import annotations

import errno
import logging
import os
from dataclasses import replace

from fsmount.errors import FsError
from fsmount.format.objects import FileEntry
from fsmount.overlay.nodes import Handle, NeedsIO, Node, split
from fsmount.overlay.resolve import PathResolver
from fsmount.overlay.upper import DIR, FILE, SYMLINK, Row

log = logging.getLogger(__name__)

COPY_CHUNK = 8 * 2**20
ACCMODE = os.O_RDONLY | os.O_WRONLY | os.O_RDWR


class FileView(PathResolver):
    """Open files by handle number, over the merged tree (names and attributes: MergedView)."""

    _handles: dict[int, Handle]
    _next_fh: int

    def adopt_group(self, n: Node) -> None:  # MergedView: a lower hard-link group gets its upper row
        raise NotImplementedError

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
        """Copy up the file at `n` (first write, truncate): afterwards its row (or its hard-link
        group's row) has a data file, which every handle of it then uses."""
        if n.data is not None:
            return n.data
        if n.link is not None and n.link not in self.upper.links:
            self.adopt_group(n)
            n = self._get(n.path)
            if n.data is not None:
                return n.data
        assert n.lower is not None
        name, fd = self._copy_up(n.path, n.lower, n.lower.size if limit is None else limit)
        try:
            os.utime(fd, ns=(n.atime, n.mtime_ns))
        finally:
            os.close(fd)
        try:
            if n.link is not None:
                group = self.upper.links[n.link]
                with self.upper.batch() as b:
                    b.put_link(replace(group, data=name, lower=None, mtime_ns=0, atime_ns=0))
            else:
                self.upper.put(Row(n.path, FILE, n.mode, 0, data=name, uid=n.uid, gid=n.gid,
                                   ctime_ns=n.ctime_ns))
        except BaseException:
            self.upper.drop_data(name)
            raise
        self._changed()
        for h in self._handles.values():
            if h.fd is None and (h.link == n.link if n.link is not None else h.path == n.path):
                h.fd = self.upper.open_data(name)
        return name

    # -- files -----------------------------------------------------------------------------

    def _new_fh(self, h: Handle) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._handles[fh] = h
        return fh

    def open(self, path: str, flags: int = os.O_RDONLY) -> int:
        """Open an existing file; O_TRUNC truncates (without fetching a byte of the lower file)."""
        with self.lock:
            n = self._get(split(path))
            if n.kind == DIR:
                raise FsError(errno.EISDIR)  # directories are opened with opendir
            if n.kind != FILE:
                raise FsError(errno.ELOOP if n.kind == SYMLINK else errno.ENXIO)  # specials: the kernel's
            writable = flags & ACCMODE != os.O_RDONLY
            if flags & os.O_TRUNC and writable:
                self._truncate_node(n, 0)
                n = self._get(n.path)
            fd = self.upper.open_data(n.data) if n.data is not None else None
            return self._new_fh(Handle(n.path, fd, n.lower, writable, bool(flags & os.O_APPEND), n.link))

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
        name = n.data if n.data is not None else self._materialise(n, limit=size)
        os.truncate(self.upper.data_path(name), size)

    def truncate(self, path: str, size: int) -> None:
        if size < 0:
            raise FsError(errno.EINVAL)
        with self.lock:
            self._truncate_node(self._get(split(path)), size)
