"""Inode numbers for a mounted version: stable for the mount's life, without a record per file.

Numbering rule (see docs/SEMANTICS.md): when a directory's tree is first needed, it is given
a contiguous range of inode numbers, one per entry in tree order; the child at index i of that
directory is `base + i` forever after. Ranges are handed out in increasing order, so an inode
number finds its directory by bisection over the range starts.

What is kept, and for how long:
- one small `DirRec` per directory ever opened (for the whole mount: directories are few);
- for files and symlinks, only while the kernel holds a lookup reference (`live`); after the
  last `forget` the entry is dropped and can be found again from its directory's tree.

All of this is touched only from the trio thread (never from worker threads).
"""

from __future__ import annotations

import logging
from bisect import bisect_right

from fsmount.format.objects import DirEntry, Entry, Tree

log = logging.getLogger(__name__)

ROOT_INO = 1


class DirRec:
    """One directory of the mounted tree, by path (a shared subtree at two paths is two records)."""

    __slots__ = ("base", "count", "ino", "lookups", "mode", "mtime_ns", "parent", "tree")

    def __init__(self, ino: int, parent: int, tree: bytes, mode: int, mtime_ns: int) -> None:
        self.ino = ino
        self.parent = parent
        self.tree = tree
        self.mode = mode
        self.mtime_ns = mtime_ns
        self.base = 0  # first child's inode number; 0 until the tree is loaded
        self.count = 0  # number of entries
        self.lookups = 0

    @property
    def loaded(self) -> bool:
        return self.base != 0


class InodeTable:
    """Maps inode numbers to directory records and (while looked up) to tree entries."""

    def __init__(self, root_tree: bytes, root_mtime_ns: int, root_mode: int = 0o755) -> None:
        root = DirRec(ROOT_INO, ROOT_INO, root_tree, root_mode, root_mtime_ns)
        self.dirs: dict[int, DirRec] = {ROOT_INO: root}
        self.live: dict[int, list[object]] = {}  # ino -> [entry, lookup count]; files and symlinks
        self._starts: list[int] = []  # range starts, increasing
        self._owners: list[int] = []  # directory inode owning the range at the same index
        self._next = ROOT_INO + 1

    # -- numbering ---------------------------------------------------------------------

    def attach(self, d: DirRec, tree: Tree) -> None:
        """Give `d` its range of child inode numbers (first time its tree is seen)."""
        if d.loaded:
            return
        n = len(tree.entries)
        d.base = self._next
        d.count = n
        self._next += max(n, 1)
        self._starts.append(d.base)
        self._owners.append(d.ino)

    def owner(self, ino: int) -> tuple[DirRec, int] | None:
        """The directory holding inode `ino`, and the entry's index in its tree."""
        i = bisect_right(self._starts, ino) - 1
        if i < 0:
            return None
        d = self.dirs[self._owners[i]]
        index = ino - d.base
        return (d, index) if index < d.count else None

    def child_dir(self, parent: DirRec, index: int, entry: DirEntry) -> DirRec:
        """The record of the subdirectory at `index` of `parent`, created on first use."""
        ino = parent.base + index
        d = self.dirs.get(ino)
        if d is None:
            d = self.dirs[ino] = DirRec(ino, parent.ino, entry.tree, entry.mode, entry.mtime_ns)
        return d

    # -- kernel references ------------------------------------------------------------------

    def remember(self, ino: int, entry: Entry | None) -> None:
        """The kernel took one more reference to `ino` (lookup, readdirplus, create...)."""
        d = self.dirs.get(ino)
        if d is not None:
            d.lookups += 1
            return
        slot = self.live.get(ino)
        if slot is None:
            self.live[ino] = [entry, 1]
        else:
            slot[1] += 1  # type: ignore[operator]

    def forget(self, ino: int, n: int) -> None:
        d = self.dirs.get(ino)
        if d is not None:
            d.lookups = max(0, d.lookups - n)  # the record stays: it fixes its children's numbers
            return
        slot = self.live.get(ino)
        if slot is None:
            return
        slot[1] -= n  # type: ignore[operator]
        if slot[1] <= 0:  # type: ignore[operator]
            del self.live[ino]

    def live_entry(self, ino: int) -> Entry | None:
        slot = self.live.get(ino)
        return None if slot is None else slot[0]  # type: ignore[return-value]

    def counts(self) -> dict[str, int]:
        return {"directories": len(self.dirs), "live_inodes": len(self.live) + len(self.dirs),
                "inodes_numbered": self._next - 1}
