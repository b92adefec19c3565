"""The read-only filesystem of one version, without FUSE: lookup, attrs, readdir, xattrs, reads.

Every method runs on the trio thread; blocking work (tree and block fetches) goes through
`BlockReader.offload`. Decoded trees come from the reader's one tree memory or a loaded tree
pack (`tree_at_hand`, no I/O, on this thread); anything else is offloaded. Failures are raised
as FsmountError subclasses carrying their errno; the FUSE adapter turns them into FUSEError in
one place and counts real failures in `errors` (OpErrors), which the filesystem object owns.
"""

from __future__ import annotations

import errno
import logging
import os
import stat
from collections.abc import AsyncIterator
from dataclasses import dataclass
from typing import NamedTuple

import trio

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import FsError
from fsmount.format.objects import DirEntry, Entry, FileEntry, LinkEntry, SymlinkEntry, Tree
from fsmount.format.records import VersionRecord
from fsmount.fs.blocks import BlockReader, OpenFile, Source
from fsmount.fs.inodes import ROOT_INO, DirRec, InodeTable
from fsmount.fs.options import FsOptions

log = logging.getLogger(__name__)

XATTR_SHA256 = "user.fsmount.sha256"
XATTR_VERSION = "user.fsmount.version"
DIR_SIZE = 4096
NAME_MAX = 255
_WRITE_FLAGS = os.O_WRONLY | os.O_RDWR | os.O_TRUNC | os.O_APPEND | os.O_CREAT


class Attr(NamedTuple):
    """What stat(2) shows for one inode (owner and timeouts are the adapter's business)."""

    ino: int
    mode: int  # full st_mode, type bits included
    nlink: int
    size: int
    mtime_ns: int
    blksize: int

    @property
    def is_dir(self) -> bool:
        return stat.S_ISDIR(self.mode)


class FsStat(NamedTuple):
    block_size: int
    blocks: int
    files: int
    namemax: int


@dataclass
class OpErrors:
    """Failed operations of one mount (store, integrity, timeouts, the disk's EIO, bugs), by kind.

    Ordinary error replies (ENOENT, ENOTEMPTY, ENOSPC...) are not failures and are not counted.
    """

    read_errors: int = 0  # read
    write_errors: int = 0  # write, fsync (writable mounts)
    metadata_errors: int = 0  # everything else: lookup, getattr, readdir, open, mkdir, rename...
    last_error: str = ""

    def failed(self, op: str, message: str) -> None:
        if op == "read":
            self.read_errors += 1
        elif op in ("write", "fsync"):
            self.write_errors += 1
        else:
            self.metadata_errors += 1
        self.last_error = f"{op}: {message}"

    def as_dict(self) -> dict[str, int | str]:
        return {"errors": self.read_errors + self.write_errors + self.metadata_errors,
                "read_errors": self.read_errors, "write_errors": self.write_errors,
                "metadata_errors": self.metadata_errors, "last_error": self.last_error}


class NoSuchName(FsError):
    """A real miss: the name is not in its directory's loaded, valid tree. The only error a lookup
    may answer with a cacheable negative entry (a version never changes); every other failure of
    a lookup (a missing or damaged tree, a timeout) is an error reply, which the kernel does not keep."""

    def __init__(self) -> None:
        super().__init__(errno.ENOENT)


DIR_NLINK = 1  # directories: "not counted" (as btrfs; find and fts then read every directory)


def _key(name: str) -> bytes:
    return name.encode("utf-8", "surrogateescape")


class ReadOnlyFS:
    """One mounted version: the merged tree its record points at, served lazily."""

    def __init__(self, reader: ObjectReader, record: VersionRecord, options: FsOptions | None = None) -> None:
        self.reader = reader
        self.record = record
        self.options = options or FsOptions()
        self.inodes = InodeTable(record.root, int(record.finalized * 1e9))
        self.blocks = BlockReader(reader, self.options)
        self.errors = OpErrors()
        self._files: dict[int, OpenFile] = {}
        self._next_fh = 1
        self._link_ino: dict[bytes, int] = {}  # hard-link group -> the inode of its first name seen
        self._prefilled: set[int] = set()  # inodes whose bytes went into the kernel's page cache

    def start(self, nursery: trio.Nursery) -> None:
        """Turn on background work (prefetch) in `nursery`."""
        self.blocks.start(nursery)

    # -- trees ------------------------------------------------------------------------

    async def _tree(self, h: bytes) -> Tree:
        t = self.reader.tree_at_hand(h)  # memory or a loaded tree pack: no thread hop
        if t is None:
            t = await self.blocks.offload(self.reader.tree, h, key=h)
        return t

    async def _dir_tree(self, d: DirRec) -> Tree:
        t = await self._tree(d.tree)
        self.inodes.attach(d, t)
        return t

    def _dir(self, ino: int) -> DirRec:
        d = self.inodes.dirs.get(ino)
        if d is None:
            raise FsError(errno.ENOTDIR if self.inodes.owner(ino) else errno.ENOENT)
        return d

    async def _entry(self, ino: int) -> Entry:
        """The tree entry of a file or symlink inode (live, or found again from its directory)."""
        e = self.inodes.live_entry(ino)
        if e is not None:
            return e
        found = self.inodes.owner(ino)
        if found is None:
            raise FsError(errno.ENOENT, f"no inode {ino}")
        d, index = found
        t = await self._dir_tree(d)
        return t.entries[index]

    # -- attributes -----------------------------------------------------------------------

    def _dir_attr(self, d: DirRec) -> Attr:
        """A directory's attributes come from its entry in its parent: its own tree is not needed,
        so a directory whose tree is missing or damaged still stats (and lists in its parent);
        only opening or listing it fails. st_nlink is DIR_NLINK, not 2 + subdirectories."""
        bs = self.record.block_size
        return Attr(d.ino, stat.S_IFDIR | (d.mode & 0o777), DIR_NLINK, DIR_SIZE, d.mtime_ns, bs)

    def _entry_attr(self, ino: int, e: Entry) -> Attr:
        if isinstance(e, FileEntry):
            return Attr(ino, stat.S_IFREG | (e.mode & 0o777), e.nlink, e.size, e.mtime_ns, e.block_size)
        if isinstance(e, LinkEntry):  # an external file is a regular file too
            return Attr(ino, stat.S_IFREG | (e.mode & 0o777), 1, e.size, e.mtime_ns, e.block_size)
        if isinstance(e, SymlinkEntry):
            return Attr(ino, stat.S_IFLNK | 0o777, 1, len(_key(e.target)), e.mtime_ns, self.record.block_size)
        raise AssertionError("directories have records")

    async def getattr(self, ino: int) -> Attr:
        d = self.inodes.dirs.get(ino)
        if d is not None:
            return self._dir_attr(d)
        return self._entry_attr(ino, await self._entry(ino))

    def _child(self, d: DirRec, index: int, e: Entry) -> Attr:
        if isinstance(e, DirEntry):
            return self._dir_attr(self.inodes.child_dir(d, index, e))
        ino = d.base + index
        if isinstance(e, FileEntry) and e.link is not None:  # names of one hard-link group: one inode
            ino = self._link_ino.setdefault(e.link, ino)
        return self._entry_attr(ino, e)

    # -- names ----------------------------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> Attr:
        """Find `name` in directory `parent`; the kernel now holds one more reference to it."""
        d = self._dir(parent)
        if name == ".":
            attr = self._dir_attr(d)
        elif name == "..":
            attr = self._dir_attr(self.inodes.dirs[d.parent])
        else:
            t = await self._dir_tree(d)  # a missing or damaged tree raises EIO here, never a miss
            index = t.index(name)  # bisection: no per-directory name dict kept in memory
            if index is None:
                raise NoSuchName()
            e = t.entries[index]
            attr = self._child(d, index, e)
            self.inodes.remember(attr.ino, None if isinstance(e, DirEntry) else e)
            return attr
        self.inodes.remember(attr.ino, None)
        return attr

    def forget(self, ino: int, n: int) -> None:
        self.inodes.forget(ino, n)
        if self._prefilled and ino not in self.inodes.live:  # the kernel dropped the inode and its pages
            self._prefilled.discard(ino)

    def remember(self, ino: int) -> None:
        """The kernel took a reference through readdirplus."""
        entry = None if ino in self.inodes.dirs else self.inodes.live_entry(ino)
        if entry is None and ino not in self.inodes.dirs:
            found = self.inodes.owner(ino)
            if found is not None:
                d, index = found
                t = self.reader.cached_tree(d.tree)
                entry = t.entries[index] if t is not None else None
        if entry is None and ino not in self.inodes.dirs:
            log.debug("readdir reference to inode %d whose tree left memory", ino)
            return
        self.inodes.remember(ino, entry)

    async def opendir(self, ino: int) -> int:
        d = self._dir(ino)
        await self._dir_tree(d)
        return ino

    async def readdir(self, ino: int, offset: int) -> AsyncIterator[tuple[str, Attr, int]]:
        """(name, attrs, next offset) from `offset`; an offset is an entry index + 1, stable forever.

        Needs this directory's tree only: no child's tree is read (a damaged child does not make
        its parent unlistable)."""
        d = self._dir(ino)
        t = await self._dir_tree(d)
        for index in range(offset, len(t.entries)):
            e = t.entries[index]
            yield e.name, self._child(d, index, e), index + 1

    async def readlink(self, ino: int) -> str:
        e = await self._entry(ino) if ino not in self.inodes.dirs else None
        if not isinstance(e, SymlinkEntry):
            raise FsError(errno.EINVAL)
        return e.target

    # -- extended attributes -------------------------------------------------------------

    async def listxattr(self, ino: int) -> list[str]:
        if ino == ROOT_INO:
            return [XATTR_VERSION]
        if ino in self.inodes.dirs:
            return []
        e = await self._entry(ino)
        return [XATTR_SHA256, XATTR_VERSION] if isinstance(e, FileEntry) else [XATTR_VERSION]

    async def getxattr(self, ino: int, name: str) -> bytes:
        if ino == ROOT_INO:
            if name == XATTR_VERSION:
                return self.record.id.encode()
        elif ino not in self.inodes.dirs:
            e = await self._entry(ino)
            if name == XATTR_VERSION and isinstance(e, FileEntry | SymlinkEntry):
                return e.origin.encode()
            if name == XATTR_SHA256 and isinstance(e, FileEntry):
                return e.sha256.hex().encode()
        raise FsError(errno.ENODATA)

    def statfs(self) -> FsStat:
        bs = self.record.block_size
        return FsStat(bs, -(-self.record.nbytes // bs), self.record.files, NAME_MAX)

    # -- files ------------------------------------------------------------------------------

    async def open(self, ino: int, flags: int) -> int:
        if flags & _WRITE_FLAGS:
            raise FsError(errno.EROFS)
        if ino in self.inodes.dirs:
            raise FsError(errno.EISDIR)
        e = await self._entry(ino)
        if isinstance(e, LinkEntry):  # hook: an external file, read as its chunks (cache/external.py)
            e = self.reader.links.register(e)
        if not isinstance(e, FileEntry):
            raise FsError(errno.ELOOP if isinstance(e, SymlinkEntry) else errno.EINVAL)
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = OpenFile(ino, e)
        return fh

    async def read(self, fh: int, offset: int, size: int) -> bytes | bytearray | memoryview:
        """The bytes asked for, possibly as a view into a block held in memory (no copy)."""
        f = self._files.get(fh)
        if f is None:
            raise FsError(errno.EBADF)
        return await self.blocks.read_buffer(f, offset, size)

    async def prefill(self, fh: int) -> Source | None:
        """Open file `fh`'s bytes for the kernel's page cache, once per inode the kernel holds, when a
        local source has them (BlockReader.prefill), else None."""
        f = self._files.get(fh)
        if f is None or f.ino in self._prefilled:
            return None
        data = await self.blocks.prefill(f)
        if data is not None:
            self._prefilled.add(f.ino)
        return data

    def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is not None:
            f.close()

    # -- status ------------------------------------------------------------------------------

    def counters(self) -> dict[str, object]:
        return {
            "version": self.record.id,
            "open_files": len(self._files),
            **self.inodes.counts(),
            **self.blocks.stats.as_dict(),
            **self.errors.as_dict(),
            "store": self.reader.stats.as_dict(),
        }
