"""Paths in the merged view of a writable mount: upper row or lower tree entry, and reading them.

Resolution of a path: an upper row wins (a whiteout hides the path); otherwise the entry
comes from the lower tree of its parent directory. The lower tree of a directory is its
row's `redirect` (a renamed lower directory), nothing if the row is opaque, else the
entry of that name in the parent's lower tree, up to the version's root. Every public method
takes the view's one lock; in inline mode a lower tree not in memory raises NeedsIO.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, TypeVar

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import FormatError, FsError
from fsmount.format.objects import DirEntry, Entry, LinkEntry, SymlinkEntry, Tree, validate_name
from fsmount.format.tree_edit import DEFAULT_DIR_MODE
from fsmount.overlay.nodes import (
    NeedsIO,
    Node,
    join,
    split,
)
from fsmount.overlay.upper import DIR, FILE, SPECIAL, SYMLINK, WHITEOUT, Row, UpperLayer, parent_of

log = logging.getLogger(__name__)

T = TypeVar("T")


class PathResolver:
    """Resolution of paths in the merged tree, and the reading operations (lookup, readdir...)."""

    def __init__(self, upper: UpperLayer, reader: ObjectReader, root: bytes, root_mtime_ns: int = 0,
                 clock: Callable[[], int] = time.time_ns) -> None:
        self.upper = upper
        self.reader = reader
        self.root = root
        self.root_mtime_ns = root_mtime_ns
        self.clock = clock
        self.lock = threading.RLock()
        self._lower_memo: dict[str, bytes | None] = {}
        self._lower_subdirs: dict[bytes, int] = {}  # lower tree -> its subdirectories (trees never change)
        self._inline = threading.local()

    def inline(self, fn: Callable[..., T], *args: Any) -> T:
        """Run `fn` here (an event-loop thread) unless it needs I/O: then it raises NeedsIO, changing nothing.

        Every operation looks up all it needs before it changes anything, so NeedsIO (from a
        tree not in memory, or a copy-up) always comes before the first change.
        """
        self._inline.on = True
        try:
            return fn(*args)
        finally:
            self._inline.on = False

    # -- resolution ------------------------------------------------------------------------

    def _tree(self, h: bytes) -> Tree:
        """A lower tree from the reader's decoded-tree memory or a loaded tree pack, else (not inline)
        fetched through it."""
        t = self.reader.tree_at_hand(h)
        if t is not None:
            return t
        if getattr(self._inline, "on", False):
            raise NeedsIO
        return self.reader.tree(h)

    def _lower_dir(self, path: str) -> bytes | None:
        """The lower tree whose entries show through directory `path`, or None.

        Iterative: climbs to the nearest known ancestor (memo, upper row or root), then walks
        down, so a path thousands of levels deep does not hit the recursion limit.
        """
        pending: list[str] = []
        p = path
        result: bytes | None
        while True:
            if p in self._lower_memo:
                result = self._lower_memo[p]
                break
            row = self.upper.rows.get(p)
            if row is not None and (row.kind != DIR or row.opaque or row.redirect):
                result = row.redirect if row.kind == DIR else None
                self._lower_memo[p] = result
                break
            if not p:
                result = self._lower_memo[p] = self.root
                break
            pending.append(p)
            p = parent_of(p)
        for p in reversed(pending):
            e = self._tree(result).get(p.rsplit("/", 1)[-1]) if result is not None else None
            result = e.tree if isinstance(e, DirEntry) else None
            self._lower_memo[p] = result
        return result

    def _lower_entry(self, path: str) -> Entry | None:
        if not path:
            return None
        pt = self._lower_dir(parent_of(path))
        return self._tree(pt).get(path.rsplit("/", 1)[-1]) if pt is not None else None

    def _node_of_row(self, row: Row, path: str | None = None) -> Node:
        """The node a row shows at `path` (default: the row's own path); a name of a hard-link
        group shows the group's row, with the group's link count."""
        path = row.path if path is None else path
        if row.link is not None:
            group = self.upper.links[row.link]
            return replace(self._node_of_row(group, path), link=row.link, nlink=group.nlink, row=row)
        u, g, c, a = row.uid, row.gid, row.ctime_ns, row.atime_ns
        if row.kind == DIR:
            return Node(path, DIR, row.mode, row.mtime_ns, 4096, row=row, uid=u, gid=g, ctime_ns=c,
                        atime_ns=a)
        if row.kind == SYMLINK:
            assert row.target is not None
            return Node(path, SYMLINK, 0o777, row.mtime_ns, len(os.fsencode(row.target)), target=row.target,
                        row=row, uid=u, gid=g, ctime_ns=c, atime_ns=a)
        if row.kind == SPECIAL:
            return Node(path, SPECIAL, stat.S_IMODE(row.mode), row.mtime_ns, 0, row=row, uid=u, gid=g,
                        ctime_ns=c, atime_ns=a, rdev=row.rdev, ftype=stat.S_IFMT(row.mode))
        if row.data is not None:
            st = os.stat(self.upper.data_path(row.data))
            return Node(path, FILE, row.mode, st.st_mtime_ns, st.st_size, data=row.data, row=row, uid=u,
                        gid=g, ctime_ns=max(c, st.st_ctime_ns), atime_ns=st.st_atime_ns)
        assert row.lower is not None
        link = row.lower.link.hex() if row.lower.link is not None else None
        return Node(path, FILE, row.mode, row.mtime_ns, row.lower.size, lower=row.lower, link=link,
                    nlink=row.lower.nlink, row=row, uid=u, gid=g, ctime_ns=c, atime_ns=a)

    def _node_of_entry(self, path: str, e: Entry) -> Node:
        if isinstance(e, DirEntry):
            return Node(path, DIR, e.mode, e.mtime_ns, 4096)
        if isinstance(e, SymlinkEntry):
            return Node(path, SYMLINK, 0o777, e.mtime_ns, len(os.fsencode(e.target)), target=e.target)
        if isinstance(e, LinkEntry):  # external files (cache/external.py): read-only mounts only, for now
            raise FsError(errno.EOPNOTSUPP, f"{path}: an external file; writable mounts do not serve it")
        if e.link is not None:
            link = e.link.hex()
            group = self.upper.links.get(link)
            if group is not None:  # a hard-link group the overlay changed: its row is the inode
                return replace(self._node_of_row(group, path), link=link, nlink=group.nlink, row=None)
            return Node(path, FILE, e.mode, e.mtime_ns, e.size, lower=e, link=link, nlink=e.nlink)
        return Node(path, FILE, e.mode, e.mtime_ns, e.size, lower=e)

    def _subdirs(self, path: str) -> int:
        """How many subdirectories directory `path` has (for its link count, 2 + that)."""
        pt = self._lower_dir(path)
        tree = self._tree(pt) if pt is not None else None
        n = 0
        if pt is not None and tree is not None:
            cached = self._lower_subdirs.get(pt)
            if cached is None:
                if len(self._lower_subdirs) > 100_000:
                    self._lower_subdirs.clear()
                cached = self._lower_subdirs[pt] = sum(isinstance(e, DirEntry) for e in tree.entries)
            n = cached
        for name in self.upper.children.get(path, ()):
            row = self.upper.rows.get(join(path, name))
            if row is None:
                continue  # only rows below: the lower entry shows, and is counted
            was = tree is not None and isinstance(tree.get(name), DirEntry)
            n += (row.kind == DIR) - was
        return n

    def _with_nlink(self, n: Node) -> Node:
        return replace(n, nlink=2 + self._subdirs(n.path)) if n.kind == DIR else n

    def _root_node(self) -> Node:
        row = self.upper.rows.get("")
        if row is not None:
            return self._node_of_row(row)
        return Node("", DIR, DEFAULT_DIR_MODE, self.root_mtime_ns, 4096)

    def _child(self, parent: str, name: str) -> Node | None:
        """`name` in directory `parent` (known to be a directory of the merged view)."""
        path = join(parent, name)
        row = self.upper.rows.get(path)
        if row is not None:
            return None if row.kind == WHITEOUT else self._node_of_row(row)
        pt = self._lower_dir(parent)
        e = self._tree(pt).get(name) if pt is not None else None
        return None if e is None else self._node_of_entry(path, e)

    def _resolve(self, path: str) -> Node | None:
        """The node at `path`; None if absent; ENOTDIR if an ancestor is not a directory (iterative).

        Ancestors are checked from their row or lower entry without making their nodes (a node
        of an upper file costs a stat): only the last name gets one."""
        if not path:
            return self._root_node()
        parent, _, last = path.rpartition("/")
        if parent:
            above = ""
            for name in parent.split("/"):
                p = join(above, name)
                row = self.upper.rows.get(p)
                if row is not None:
                    if row.kind == WHITEOUT:
                        return None
                    if row.kind != DIR:
                        raise FsError(errno.ENOTDIR)
                else:
                    pt = self._lower_dir(above)
                    e = self._tree(pt).get(name) if pt is not None else None
                    if e is None:
                        return None
                    if not isinstance(e, DirEntry):
                        self._node_of_entry(p, e)  # an external file: its own error
                        raise FsError(errno.ENOTDIR)
                above = p
        return self._child(parent, last)

    def _get(self, path: str) -> Node:
        n = self._resolve(path)
        if n is None:
            raise FsError(errno.ENOENT)
        return n

    def _parent_dir(self, path: str) -> str:
        """Check that the parent of `path` is an existing directory; return it."""
        return self._parent_node(path)[0]

    def _parent_node(self, path: str) -> tuple[str, Node]:
        """Check that the parent of `path` is an existing directory; return it and its node."""
        if not path:
            raise FsError(errno.EBUSY, "the root cannot be replaced or removed")
        validate = path.rsplit("/", 1)[-1]
        try:
            validate_name(validate)
        except FormatError:
            raise FsError(errno.EINVAL, f"invalid name {validate!r}") from None
        parent = parent_of(path)
        pn = self._get(parent)
        if pn.kind != DIR:
            raise FsError(errno.ENOTDIR)
        return parent, pn

    def _names(self, path: str) -> dict[str, Node]:
        out: dict[str, Node] = {}
        pt = self._lower_dir(path)
        if pt is not None:
            for e in self._tree(pt).entries:
                out[e.name] = self._node_of_entry(join(path, e.name), e)
        for name in self.upper.children.get(path, ()):
            row = self.upper.rows.get(join(path, name))
            if row is None:
                continue
            if row.kind == WHITEOUT:
                out.pop(name, None)
            else:
                out[name] = self._node_of_row(row)
        return out

    def _changed(self) -> None:
        self._lower_memo.clear()

    # -- reading ---------------------------------------------------------------------------

    def lookup(self, path: str) -> Node:
        """The node at `path`; a directory's with its link count (2 + subdirectories)."""
        with self.lock:
            return self._with_nlink(self._get(split(path)))

    getattr = lookup

    def exists(self, path: str) -> bool:
        with self.lock:
            try:
                return self._resolve(split(path)) is not None
            except FsError:
                return False

    def readdir(self, path: str) -> list[tuple[str, Node]]:
        """Entries of a directory, sorted by name."""
        with self.lock:
            n = self._get(split(path))
            if n.kind != DIR:
                raise FsError(errno.ENOTDIR)
            return sorted((name, self._with_nlink(c)) for name, c in self._names(n.path).items())

    def readlink(self, path: str) -> str:
        with self.lock:
            n = self._get(split(path))
            if n.kind != SYMLINK:
                raise FsError(errno.EINVAL)
            assert n.target is not None
            return n.target

    def statfs(self) -> os.statvfs_result:
        """Space of the overlay's own disk: what writers can still use."""
        return os.statvfs(self.upper.folder)
