"""What a path is in the merged view of a writable mount (Node), an open file (Handle), paths, and
the rename(2) rules in the order Linux checks them, so callers see the same errno."""

from __future__ import annotations

import errno
import stat
from dataclasses import dataclass

from fsmount.errors import FsError
from fsmount.format.objects import FileEntry
from fsmount.overlay.rows import DIR, FILE, SPECIAL, SYMLINK, Row

RENAME_NOREPLACE = 1
RENAME_EXCHANGE = 2
RENAME_WHITEOUT = 4


@dataclass(slots=True, frozen=True)
class Node:
    """What a path is in the merged view."""

    path: str
    kind: int  # FILE, DIR, SYMLINK or SPECIAL
    mode: int  # permission bits (07777)
    mtime_ns: int
    size: int
    target: str | None = None
    data: str | None = None  # upper data file
    lower: FileEntry | None = None  # lower file (untouched, or a metadata-only copy)
    row: Row | None = None
    uid: int | None = None  # None: the mounting user
    gid: int | None = None
    ctime_ns: int = 0  # 0: the mtime
    atime_ns: int = 0  # 0: the mtime
    nlink: int = 1  # files: names of its hard-link group; directories: filled in by lookup/readdir
    rdev: int = 0
    ftype: int = 0  # SPECIAL: S_IFIFO, S_IFSOCK, S_IFCHR or S_IFBLK
    link: str | None = None  # hard-link group id (hex), when the file has one

    @property
    def st_mode(self) -> int:
        if self.kind == SPECIAL:
            return self.ftype | self.mode
        return {FILE: stat.S_IFREG, DIR: stat.S_IFDIR, SYMLINK: stat.S_IFLNK}[self.kind] | self.mode

    @property
    def ctime(self) -> int:
        return self.ctime_ns or self.mtime_ns

    @property
    def atime(self) -> int:
        return self.atime_ns or self.mtime_ns


class NeedsIO(Exception):
    """Raised in inline mode when an operation would fetch from the store or copy bytes."""


class Handle:
    """One open() of a file. `fd` is its data file once copied up; until then reads go to `lower`."""

    __slots__ = ("append", "fd", "link", "lower", "path", "writable")

    def __init__(self, path: str | None, fd: int | None, lower: FileEntry | None, writable: bool,
                 append: bool, link: str | None = None) -> None:
        self.path = path  # None once unlinked
        self.fd = fd
        self.lower = lower
        self.writable = writable
        self.append = append
        self.link = link  # hard-link group: a copy-up of the group reaches every handle of it


def split(path: str) -> str:
    """Normalise '/a//b/' to 'a/b'; reject '..' and bad names with EINVAL."""
    if (path.isascii() and 0 < len(path) <= 255 and path[0] not in "/." and path[-1] != "/"
            and "//" not in path and "/." not in path):
        return path  # already normal (no name over 255 bytes, none starting with '.')
    parts = [p for p in path.split("/") if p and p != "."]
    for p in parts:
        if p == "..":
            raise FsError(errno.EINVAL, f"{path!r}: '..' is not allowed")
        if len(p.encode("utf-8", "surrogateescape")) > 255:
            raise FsError(errno.ENAMETOOLONG)
    return "/".join(parts)


def join(parent: str, name: str) -> str:
    return f"{parent}/{name}" if parent else name


def check_rename(old: str, new: str, src: Node, dst: Node | None, dst_has_entries: bool, flags: int) -> None:
    """Refuse a rename POSIX refuses, with Linux's errno in Linux's order (renameat2)."""
    if dst is not None and flags & RENAME_NOREPLACE:
        raise FsError(errno.EEXIST)
    if new.startswith(old + "/"):
        raise FsError(errno.EINVAL, "cannot move a directory into itself")
    if dst is None:
        return
    if old.startswith(new + "/"):
        raise FsError(errno.ENOTEMPTY)
    if src.kind == DIR and dst.kind != DIR:
        raise FsError(errno.ENOTDIR)
    if src.kind != DIR and dst.kind == DIR:
        raise FsError(errno.EISDIR)
    if dst.kind == DIR and dst_has_entries:
        raise FsError(errno.ENOTEMPTY)


def check_rename_flags(flags: int) -> None:
    """Only RENAME_NOREPLACE: RENAME_EXCHANGE, RENAME_WHITEOUT and unknown flags are EINVAL."""
    if flags & ~RENAME_NOREPLACE:
        raise FsError(errno.EINVAL, "only RENAME_NOREPLACE is supported")
