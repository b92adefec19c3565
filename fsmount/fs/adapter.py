"""The thin pyfuse3 layer: converts names and attributes, and every error to FUSEError in one place."""

from __future__ import annotations

import errno
import functools
import logging
import os
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

import pyfuse3

from fsmount.errors import FsmountError, errno_of, is_failure
from fsmount.fs.core import Attr, NoSuchName, OpErrors, ReadOnlyFS

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Awaitable[Any]])


def reply_errno(errors: OpErrors, op: str, e: Exception) -> int:
    """The errno that operation `op` replies for `e`, logged and counted by what it is.

    An ordinary error reply (ENOENT, ENOTEMPTY, EEXIST, ENOSPC, EROFS...) is the caller's
    business: debug log, not counted. A failure (store, integrity, timeout, the disk's EIO) is
    logged as an error in one line and counted; a bug also gets its traceback, and EIO.
    """
    err = errno_of(e)
    if not is_failure(e):
        log.debug("%s: %s", op, e)
        return err
    if isinstance(e, FsmountError | OSError):
        log.error("%s: %s", op, e)
        errors.failed(op, str(e))
    else:  # a bug must never take the daemon down
        log.exception("unexpected error in %s", op)
        errors.failed(op, f"{type(e).__name__}: {e}")
    return err


def fuse_errors(fn: F) -> F:
    """The one place exceptions become FUSEError: each keeps its errno (OSError too), bugs are EIO."""

    @functools.wraps(fn)
    async def wrapper(self: Operations, *args: Any) -> Any:
        try:
            return await fn(self, *args)
        except pyfuse3.FUSEError:
            raise
        except Exception as e:
            raise pyfuse3.FUSEError(reply_errno(self.fs.errors, fn.__name__, e)) from None

    return wrapper  # type: ignore[return-value]


class Operations(pyfuse3.Operations):
    """Read-only FUSE operations delegating to a `ReadOnlyFS`; every write is EROFS."""

    supports_dot_lookup = True
    enable_writeback_cache = False
    enable_acl = False

    def __init__(self, fs: ReadOnlyFS) -> None:
        super().__init__()
        self.fs = fs
        self.uid = os.getuid()
        self.gid = os.getgid()
        self.prefill = True  # off for good once the kernel refuses a notify_store

    def _attrs(self, a: Attr) -> pyfuse3.EntryAttributes:
        out = pyfuse3.EntryAttributes()
        out.st_ino = a.ino
        out.st_mode = a.mode
        out.st_nlink = a.nlink
        out.st_size = a.size
        out.st_blksize = a.blksize
        out.st_blocks = -(-a.size // 512)
        out.st_uid, out.st_gid = self.uid, self.gid
        out.st_atime_ns = out.st_mtime_ns = out.st_ctime_ns = a.mtime_ns
        out.entry_timeout = self.fs.options.entry_timeout
        out.attr_timeout = self.fs.options.attr_timeout
        out.generation = 0
        return out

    # -- reading metadata -------------------------------------------------------------

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        try:
            return self._attrs(await self.fs.lookup(parent_inode, os.fsdecode(name)))
        except NoSuchName:  # only a real miss; any other failure is an error reply the kernel does not keep
            neg = pyfuse3.EntryAttributes()  # versions never change: cache the miss too
            neg.st_ino = 0
            neg.entry_timeout = self.fs.options.entry_timeout
            return neg

    async def forget(self, inode_list: Any) -> None:
        try:
            for ino, n in inode_list:
                self.fs.forget(ino, n)
        except Exception:
            log.exception("forget failed")

    @fuse_errors
    async def getattr(self, inode: int, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.fs.getattr(inode))

    @fuse_errors
    async def readlink(self, inode: int, ctx: Any) -> bytes:
        return os.fsencode(await self.fs.readlink(inode))

    @fuse_errors
    async def opendir(self, inode: int, ctx: Any) -> int:
        return await self.fs.opendir(inode)

    @fuse_errors
    async def readdir(self, fh: int, start_id: int, token: Any) -> None:
        async for name, attr, nxt in self.fs.readdir(fh, start_id):
            if not pyfuse3.readdir_reply(token, os.fsencode(name), self._attrs(attr), nxt):
                break
            self.fs.remember(attr.ino)

    async def releasedir(self, fh: int) -> None:
        return None

    @fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = self.fs.statfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize = out.f_frsize = s.block_size
        out.f_blocks = s.blocks
        out.f_bfree = out.f_bavail = 0
        out.f_files = s.files
        out.f_ffree = out.f_favail = 0
        out.f_namemax = s.namemax
        return out

    @fuse_errors
    async def getxattr(self, inode: int, name: bytes, ctx: Any) -> bytes:
        return await self.fs.getxattr(inode, os.fsdecode(name))

    @fuse_errors
    async def listxattr(self, inode: int, ctx: Any) -> list[bytes]:
        return [os.fsencode(n) for n in await self.fs.listxattr(inode)]

    @fuse_errors
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        if mode & os.W_OK:
            raise pyfuse3.FUSEError(errno.EROFS)
        return True

    # -- reading data ---------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        fh = await self.fs.open(inode, flags)
        if self.prefill and not flags & os.O_DIRECT:  # O_DIRECT bypasses the page cache
            await self._prefill(inode, fh)
        return pyfuse3.FileInfo(fh=fh, keep_cache=True, direct_io=False)  # keep_cache keeps the prefill

    async def _prefill(self, inode: int, fh: int) -> None:
        """Put a small file's verified bytes into the kernel's page cache now (notify_store): its
        READs, one round trip each, are then never sent."""
        data = await self.fs.prefill(fh)
        if data is None:
            return
        try:
            pyfuse3.notify_store(inode, 0, data)  # type: ignore[arg-type]  # any buffer
        except OSError as e:
            self.prefill = False
            log.info("the kernel refuses FUSE notify_store (%s): small files are served by READs", e)

    @fuse_errors
    async def read(self, fh: int, off: int, size: int) -> bytes | bytearray | memoryview:  # type: ignore[override]
        """pyfuse3 takes any contiguous buffer (it declares bytes): a view into a held block is no copy."""
        return await self.fs.read(fh, off, size)

    async def release(self, fh: int) -> None:
        try:
            self.fs.release(fh)
        except Exception:
            log.exception("release failed")

    async def flush(self, fh: int) -> None:
        """ENOSYS: the kernel then never sends FLUSH again on this mount (a round trip per close saved;
        a read-only file has nothing to flush)."""
        raise pyfuse3.FUSEError(errno.ENOSYS)

    # -- every change is refused ------------------------------------------------------------

    async def setattr(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def create(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def mknod(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def mkdir(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def unlink(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def rmdir(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def rename(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def symlink(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def link(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def write(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def setxattr(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def removexattr(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EROFS)

    async def fsync(self, fh: int, datasync: bool) -> None:
        return None

    async def fsyncdir(self, fh: int, datasync: bool) -> None:
        return None
