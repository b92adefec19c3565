"""What stat(2) shows for an inode of a writable mount: WAttr, made from a merged-view Node or the
fstat of an unlinked file's data file."""

from __future__ import annotations

import os
import stat
from typing import NamedTuple

from fsmount.overlay.nodes import Node


class WAttr(NamedTuple):
    """What stat(2) shows for one inode of a writable mount (core.Attr plus owner, times, rdev)."""

    ino: int
    mode: int
    nlink: int
    size: int
    mtime_ns: int
    blksize: int
    uid: int
    gid: int
    atime_ns: int
    ctime_ns: int
    rdev: int = 0

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


def node_attr(n: Node, ino: int, from_upper: bool, blksize: int, uid: int, gid: int) -> WAttr:
    """Node `n` as inode `ino`; `uid`/`gid` stand for an owner of None (the mounting user).

    A version's own set-id bits never show (`from_upper`: the attributes are the overlay's)."""
    mode = n.st_mode if from_upper else n.st_mode & ~0o7000
    return WAttr(ino, mode, n.nlink, n.size, n.mtime_ns, blksize, uid if n.uid is None else n.uid,
                 gid if n.gid is None else n.gid, n.atime, n.ctime, n.rdev)


def unlinked_attr(ino: int, st: os.stat_result, blksize: int, uid: int, gid: int) -> WAttr:
    """An unlinked file still open: what fstat of its data file says, with no links."""
    return WAttr(ino, stat.S_IFREG | stat.S_IMODE(st.st_mode), 0, st.st_size, st.st_mtime_ns, blksize, uid,
                 gid, st.st_atime_ns, st.st_ctime_ns)
