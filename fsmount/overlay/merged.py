"""The merged view of a writable mount by path: lower version tree + upper layer, every POSIX mutation.

How a path resolves (upper row, else lower tree entry) and the reading operations are in
resolve.py (PathResolver); open files and copy-up in files.py (FileView, the base class);
Node, Handle and the rename rules in nodes.py. Hard links: a path of a hard-link group has a
row naming the group (`link`); the group's row in the `links` table holds the inode (bytes,
mode, owner, times) and its link count. A group that came from the version below gets its
row the first time the overlay changes it (`adopt_group`: one walk of the merged tree, on a
worker thread, to find every name of it).

Concurrency: every public method takes one lock, so it may be called from any thread.
WritableFS calls metadata operations through `inline` first: there, one that would fetch
from the store (a lower tree not in the reader's memory), copy bytes (a copy-up) or walk the
tree raises NeedsIO before changing anything, and is run again on a worker thread. Local disk
work that `inline` allows (a sqlite transaction, an fstat of a data file) is WritableFS's to
move off the event loop (it runs `inline` itself on a worker thread when asked to, see
fs/writable.py). Errors are FsError (or OSError) carrying errno.
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
from fsmount.overlay.files import FileView
from fsmount.overlay.nodes import (
    Handle,
    NeedsIO,
    Node,
    check_rename,
    check_rename_flags,
    split,
)
from fsmount.overlay.upper import DIR, FILE, SPECIAL, SYMLINK, WHITEOUT, Batch, Row, UpperLayer, new_link_id

log = logging.getLogger(__name__)

SPECIAL_TYPES = (stat.S_IFIFO, stat.S_IFSOCK, stat.S_IFCHR, stat.S_IFBLK)


class MergedView(FileView):
    """Every mutation of the merged tree by path (open files: FileView; reading: PathResolver)."""

    def __init__(self, upper: UpperLayer, reader: ObjectReader, root: bytes, root_mtime_ns: int = 0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        super().__init__(upper, reader, root, root_mtime_ns, clock)
        self._handles: dict[int, Handle] = {}
        self._next_fh = 1
        self.default_uid = os.getuid()  # the owner of a node whose uid is None (the mounting user)
        self.default_gid = os.getgid()

    # -- names -------------------------------------------------------------------------------

    def _hide(self, b: Batch, path: str) -> None:
        """Remove `path`'s row and hide the lower entry there, if there is one (in batch `b`)."""
        if self._lower_entry(path) is not None:
            b.put(Row(path, WHITEOUT))
        else:
            b.delete(path)

    def _touch_dir(self, b: Batch, path: str, now: int) -> None:
        """An entry was added to or removed from directory `path`: its mtime and ctime are now."""
        row = self.upper.rows.get(path)
        if row is None:
            n = self._get(path)
            row = Row(path, DIR, n.mode, now, uid=n.uid, gid=n.gid)
        b.put(replace(row, mtime_ns=now, ctime_ns=now))

    def _owner(self, pn: Node, uid: int | None, gid: int | None, mode: int,
               is_dir: bool) -> tuple[int | None, int | None, int]:
        """Owner and mode of a new entry in directory `pn`: the caller's uid and gid (kept as None
        when they are the mounting user's), but the parent's group when the parent is
        set-group-ID (and then a new directory is set-group-ID too), as on Linux."""
        if pn.mode & stat.S_ISGID:
            gid = pn.gid
            if is_dir:
                mode |= stat.S_ISGID
        uid = None if uid == self.default_uid else uid
        gid = None if gid == self.default_gid else gid
        return uid, gid, mode

    def _new_name(self, path: str) -> tuple[str, Node]:
        """Check that `path` can be made (parent a directory, name free); its parent and the node."""
        parent, pn = self._parent_node(path)
        if self._child(parent, path.rsplit("/", 1)[-1]) is not None:
            raise FsError(errno.EEXIST)
        return parent, pn

    def _drop_name(self, b: Batch, n: Node, now: int) -> str | None:
        """Node `n` loses its name (unlink, or replaced by a rename): one fewer link of its group;
        returns the data file to remove once the batch is written (its last name went)."""
        if n.link is not None:
            group = self.upper.links[n.link]
            if group.nlink > 1:
                b.put_link(replace(group, nlink=group.nlink - 1, ctime_ns=now))
                return None
            b.delete_link(n.link)
            return group.data
        return n.data

    def create_node(self, path: str, mode: int = 0o644, flags: int = os.O_RDWR, uid: int | None = None,
                    gid: int | None = None) -> tuple[int, Node]:
        """Create a new regular file (EEXIST if the path exists) and open it; also its node."""
        with self.lock:
            path = split(path)
            parent, pn = self._new_name(path)
            uid, gid, mode = self._owner(pn, uid, gid, mode, False)
            name, fd = self.upper.new_data_file()
            row = Row(path, FILE, stat.S_IMODE(mode), 0, data=name, uid=uid, gid=gid)
            try:
                with self.upper.batch() as b:
                    b.put(row)
                    self._touch_dir(b, parent, self.clock())
            except BaseException:
                os.close(fd)
                self.upper.drop_data(name)
                raise
            self._changed()
            st = os.fstat(fd)
            node = Node(path, FILE, row.mode, st.st_mtime_ns, st.st_size, data=name, row=row, uid=uid,
                        gid=gid, ctime_ns=st.st_ctime_ns, atime_ns=st.st_atime_ns)
            return self._new_fh(Handle(path, fd, None, True, bool(flags & os.O_APPEND))), node

    def create(self, path: str, mode: int = 0o644, flags: int = os.O_RDWR) -> int:
        """Create a new regular file (EEXIST if the path exists) and open it."""
        return self.create_node(path, mode, flags)[0]

    def mknod(self, path: str, mode: int, rdev: int = 0, uid: int | None = None,
              gid: int | None = None) -> Node:
        """mknod(2): a regular file, or a fifo, socket or device node (kept in the overlay; a
        commit refuses them, docs/SEMANTICS.md)."""
        kind = stat.S_IFMT(mode)
        if kind in (0, stat.S_IFREG):
            fh, _ = self.create_node(path, mode, os.O_RDONLY, uid, gid)
            self.release(fh)
            return self.lookup(path)
        if kind not in SPECIAL_TYPES:
            raise FsError(errno.EINVAL)
        with self.lock:
            path = split(path)
            parent, pn = self._new_name(path)
            uid, gid, mode = self._owner(pn, uid, gid, mode, False)
            now = self.clock()
            row = Row(path, SPECIAL, kind | stat.S_IMODE(mode), now, uid=uid, gid=gid, ctime_ns=now,
                      rdev=rdev if kind in (stat.S_IFCHR, stat.S_IFBLK) else 0)
            with self.upper.batch() as b:
                b.put(row)
                self._touch_dir(b, parent, now)
            self._changed()
            return self._node_of_row(row)

    def unlink(self, path: str) -> None:
        with self.lock:
            path = split(path)
            parent = self._parent_dir(path)
            n = self._get(path)
            if n.kind == DIR:
                raise FsError(errno.EISDIR)
            if n.link is not None and n.link not in self.upper.links:
                self.adopt_group(n)
                n = self._get(path)
            now = self.clock()
            with self.upper.batch() as b:
                self._hide(b, path)
                gone = self._drop_name(b, n, now)
                self._touch_dir(b, parent, now)
            self._changed()
            if gone is not None:
                self.upper.drop_data_later(gone)
            for h in self._handles.values():
                if h.path == path:
                    h.path = None

    def mkdir(self, path: str, mode: int = 0o755, uid: int | None = None, gid: int | None = None) -> Node:
        with self.lock:
            path = split(path)
            parent, pn = self._new_name(path)
            uid, gid, mode = self._owner(pn, uid, gid, mode, True)
            opaque = self._lower_entry(path) is not None  # a whiteout was here: hide the old contents
            now = self.clock()
            row = Row(path, DIR, stat.S_IMODE(mode), now, opaque=opaque, uid=uid, gid=gid, ctime_ns=now)
            with self.upper.batch() as b:
                b.put(row)
                self._touch_dir(b, parent, now)
            self._changed()
            return self._with_nlink(self._node_of_row(row))

    def rmdir(self, path: str) -> None:
        with self.lock:
            path = split(path)
            parent = self._parent_dir(path)
            n = self._get(path)
            if n.kind != DIR:
                raise FsError(errno.ENOTDIR)
            if self._names(path):
                raise FsError(errno.ENOTEMPTY)
            with self.upper.batch() as b:
                b.delete_below(path)
                self._hide(b, path)
                self._touch_dir(b, parent, self.clock())
            self._changed()

    def symlink(self, path: str, target: str, uid: int | None = None, gid: int | None = None) -> Node:
        with self.lock:
            path = split(path)
            if not target or "\0" in target:
                raise FsError(errno.EINVAL)
            parent, pn = self._new_name(path)
            uid, gid, _ = self._owner(pn, uid, gid, 0, False)
            now = self.clock()
            row = Row(path, SYMLINK, 0o777, now, target=target, uid=uid, gid=gid, ctime_ns=now)
            with self.upper.batch() as b:
                b.put(row)
                self._touch_dir(b, parent, now)
            self._changed()
            return self._node_of_row(row)

    # -- hard links --------------------------------------------------------------------------

    def adopt_group(self, n: Node) -> None:
        """Give the lower hard-link group of `n` its upper row, and every name of it a row naming
        the group, so that a change to one name shows (and is committed) at every name.

        Finds the names by walking the merged tree: NeedsIO inline (it may fetch trees)."""
        assert n.link is not None
        if n.link in self.upper.links:
            return
        if getattr(self._inline, "on", False):
            raise NeedsIO
        paths: list[Node] = []
        stack = [""]
        while stack:
            for child in self._names(stack.pop()).values():
                if child.kind == DIR:
                    stack.append(child.path)
                elif child.link == n.link:
                    paths.append(child)
        first = paths[0] if paths else n
        assert first.lower is not None
        group = Row(n.link, FILE, first.mode, first.mtime_ns, lower=first.lower, uid=first.uid,
                    gid=first.gid, ctime_ns=first.ctime_ns, atime_ns=first.atime_ns, nlink=len(paths) or 1)
        with self.upper.batch() as b:
            b.put_link(group)
            for p in paths:
                b.put(Row(p.path, FILE, link=n.link))
        self._changed()

    def link(self, old: str, new: str) -> Node:
        """link(2): `new` becomes another name of the file (or special file) at `old`."""
        with self.lock:
            old, new = split(old), split(new)
            src = self._get(old)
            if src.kind == DIR:
                raise FsError(errno.EPERM)
            parent, _ = self._new_name(new)
            if src.link is not None and src.link not in self.upper.links:
                self.adopt_group(src)
                src = self._get(old)
            now = self.clock()
            with self.upper.batch() as b:
                if src.link is not None:
                    group = self.upper.links[src.link]
                    b.put_link(replace(group, nlink=group.nlink + 1, ctime_ns=now))
                    link = src.link
                else:  # the first hard link: the file's own row becomes the group's row
                    link = new_link_id()
                    b.put_link(replace(self._row_for(src, link), ctime_ns=now, nlink=2, opaque=False,
                                       redirect=None))
                    b.put(Row(old, src.kind, link=link))
                b.put(Row(new, src.kind, link=link))
                self._touch_dir(b, parent, now)
            self._changed()
            for h in self._handles.values():
                if h.path == old and h.link is None:
                    h.link = link
            return self._get(new)

    def _row_for(self, n: Node, path: str) -> Row:
        """The row that makes node `n` appear at `path` (metadata only: no bytes move)."""
        if n.row is not None and n.row.link is not None:
            return n.row.moved(path)
        if n.kind == FILE and n.data is not None:
            return Row(path, FILE, n.mode, 0, data=n.data, uid=n.uid, gid=n.gid,
                       ctime_ns=n.row.ctime_ns if n.row is not None else 0)
        row = Row(path, n.kind, n.mode, n.mtime_ns, uid=n.uid, gid=n.gid, ctime_ns=n.ctime_ns,
                  atime_ns=n.atime_ns)
        if n.kind == DIR:
            return replace(row, opaque=True, redirect=self._lower_dir(n.path))
        if n.kind == SYMLINK:
            return replace(row, mode=0o777, target=n.target)
        if n.kind == SPECIAL:
            return replace(row, mode=n.ftype | n.mode, rdev=n.rdev)
        return replace(row, lower=n.lower)

    def rename(self, old: str, new: str, flags: int = 0) -> None:
        """rename(2)/renameat2: files and directories, replacing a target where POSIX allows."""
        with self.lock:
            old, new = split(old), split(new)
            check_rename_flags(flags)
            old_parent = self._parent_dir(old)
            new_parent = self._parent_dir(new)
            src = self._get(old)
            if old == new:
                return
            dst = self._child(new_parent, new.rsplit("/", 1)[-1])
            full = dst is not None and dst.kind == DIR and bool(self._names(new))
            check_rename(old, new, src, dst, full, flags)
            if dst is not None and src.link is not None and dst.link == src.link:
                return  # two names of one file: rename(2) does nothing
            for n in (src, dst):
                if n is not None and n.link is not None and n.link not in self.upper.links:
                    self.adopt_group(n)
            src = self._get(old)
            dst = self._child(new_parent, new.rsplit("/", 1)[-1])
            row = self._row_for(src, new)
            now = self.clock()
            gone = None
            with self.upper.batch() as b:
                if dst is not None and dst.kind == DIR:
                    b.delete_below(new)
                elif dst is not None:
                    gone = self._drop_name(b, dst, now)
                if src.kind == DIR:
                    b.move_below(old, new)
                if row.link is not None:
                    b.put(row)
                    group = self.upper.links[row.link]
                    if not b.has_link(row.link):
                        b.put_link(replace(group, ctime_ns=now))
                else:
                    b.put(replace(row, ctime_ns=now) if row.data is None else row)
                self._hide(b, old)
                self._touch_dir(b, old_parent, now)
                if new_parent != old_parent:
                    self._touch_dir(b, new_parent, now)
            self._changed()
            if gone is not None and gone != src.data:
                self.upper.drop_data_later(gone)
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

    def setattrs(self, path: str, mode: int | None = None, mtime_ns: int | None = None,
                 atime_ns: int | None = None, uid: int | None = None, gid: int | None = None) -> Node:
        """chmod, chown, utimens (any of them): stored in the row (of the hard-link group); the
        ctime becomes now. A change to what the node already has is no change (no transaction)."""
        with self.lock:
            n = self._get(split(path))
            if n.link is not None and n.link not in self.upper.links:
                self.adopt_group(n)
                n = self._get(n.path)
            if mode is not None and (n.kind == SYMLINK or stat.S_IMODE(mode) == n.mode):
                mode = None  # unchanged (tar and cp set the mode create already gave): no transaction
            if uid is not None and uid == (self.default_uid if n.uid is None else n.uid):
                uid = None
            if gid is not None and gid == (self.default_gid if n.gid is None else n.gid):
                gid = None
            if mtime_ns is not None and mtime_ns == n.mtime_ns and atime_ns in (None, n.atime):
                mtime_ns = atime_ns = None
            if mode is None and uid is None and gid is None and mtime_ns is None and atime_ns is None:
                return self._with_nlink(n)
            now = self.clock()
            shown = n  # what the node looks like afterwards (no second stat of a data file)
            if n.kind == FILE and n.data is not None:
                if mtime_ns is not None or atime_ns is not None:  # the data file's times (and ctime)
                    times = (n.atime if atime_ns is None else atime_ns,
                             n.mtime_ns if mtime_ns is None else mtime_ns)
                    os.utime(self.upper.data_path(n.data), ns=times)
                    shown = replace(n, atime_ns=times[0], mtime_ns=times[1], ctime_ns=max(now, n.ctime))
                    mtime_ns = atime_ns = None
                if mode is None and uid is None and gid is None:
                    return shown
            if n.link is not None:
                row, put_link = self.upper.links[n.link], True
            else:
                row, put_link = (n.row if n.row is not None else self._row_for(n, n.path)), False
                if n.kind == DIR and n.row is None:
                    row = Row(n.path, DIR, n.mode, n.mtime_ns)  # attributes only: lower entries show
            changes: dict[str, object] = {"ctime_ns": now}
            if mode is not None:
                changes["mode"] = stat.S_IFMT(row.mode) | stat.S_IMODE(mode) if n.kind == SPECIAL else mode
            if uid is not None:
                changes["uid"] = uid
            if gid is not None:
                changes["gid"] = gid
            if mtime_ns is not None:
                changes["mtime_ns"] = mtime_ns
            if atime_ns is not None:
                changes["atime_ns"] = atime_ns
            new_row = replace(row, **changes)  # type: ignore[arg-type]
            with self.upper.batch() as b:
                if put_link:
                    b.put_link(new_row)
                else:
                    b.put(new_row)
            self._changed()
            shown = replace(shown, mode=stat.S_IMODE(new_row.mode), uid=new_row.uid, gid=new_row.gid,
                            ctime_ns=max(now, shown.ctime), row=shown.row if put_link else new_row)
            if n.data is None:
                shown = replace(shown, mtime_ns=new_row.mtime_ns, atime_ns=new_row.atime_ns)
            return self._with_nlink(shown)

    def chmod(self, path: str, mode: int) -> None:
        self.setattrs(path, mode=mode)

    def chown(self, path: str, uid: int | None, gid: int | None) -> None:
        self.setattrs(path, uid=uid, gid=gid)

    def utimens(self, path: str, mtime_ns: int | None = None, atime_ns: int | None = None) -> None:
        now = self.clock()
        self.setattrs(path, mtime_ns=now if mtime_ns is None else mtime_ns,
                      atime_ns=now if atime_ns is None and mtime_ns is None else atime_ns)

    # -- after a commit ---------------------------------------------------------------------------

    def rebase(self, root: bytes, root_mtime_ns: int) -> None:
        """The upper layer was emptied into a new version with root `root`: stand on it.

        Open handles of copied-up files switch to the version's entry; this looks up each of
        their paths (possibly fetching trees), so WritableFS runs it on a worker thread."""
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
                    h.link = e.link.hex() if e.link is not None else None
