"""pyfuse3 operations of a writable mount: the read-only adapter plus every change, sent to WritableFS."""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any

import pyfuse3

from fsmount.fs.adapter import Operations, fuse_errors
from fsmount.fs.wattr import WAttr
from fsmount.fs.writable import WritableFS

log = logging.getLogger(__name__)


def _ids(ctx: Any) -> tuple[int | None, int | None]:
    """The caller's uid and gid (None without a request context: the mounting user)."""
    return (None, None) if ctx is None else (ctx.uid, ctx.gid)


class WritableOperations(Operations):
    """Operations over a WritableFS. Errors become FUSEError in `fuse_errors`, as for reads."""

    fs: WritableFS  # type: ignore[assignment]

    def __init__(self, fs: WritableFS) -> None:
        super().__init__(fs)  # type: ignore[arg-type]

    def _attrs(self, a: WAttr) -> pyfuse3.EntryAttributes:  # type: ignore[override]
        out = pyfuse3.EntryAttributes()
        out.st_ino = a.ino
        out.st_mode = a.mode
        out.st_nlink = a.nlink
        out.st_size = a.size
        out.st_blksize = a.blksize
        out.st_blocks = -(-a.size // 512)
        out.st_uid, out.st_gid = a.uid, a.gid
        out.st_rdev = a.rdev
        out.st_mtime_ns = a.mtime_ns
        out.st_atime_ns = a.atime_ns
        out.st_ctime_ns = a.ctime_ns
        out.entry_timeout = self.fs.options.entry_timeout
        out.attr_timeout = self.fs.options.attr_timeout
        out.generation = 0
        return out

    # -- reading metadata: no negative caching, names change ------------------------------

    @fuse_errors
    async def lookup(self, parent_inode: int, name: bytes, ctx: Any = None) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.fs.lookup(parent_inode, os.fsdecode(name)))

    async def releasedir(self, fh: int) -> None:
        self.fs.releasedir(fh)

    @fuse_errors
    async def statfs(self, ctx: Any) -> pyfuse3.StatvfsData:
        s = self.fs.statvfs()
        out = pyfuse3.StatvfsData()
        out.f_bsize, out.f_frsize = s.f_bsize, s.f_frsize
        out.f_blocks, out.f_bfree, out.f_bavail = s.f_blocks, s.f_bfree, s.f_bavail
        out.f_files, out.f_ffree, out.f_favail = s.f_files, s.f_ffree, s.f_favail
        out.f_namemax = 255
        return out

    @fuse_errors
    async def access(self, inode: int, mode: int, ctx: Any) -> bool:
        await self.fs.getattr(inode)
        return True

    # -- files ----------------------------------------------------------------------------

    @fuse_errors
    async def open(self, inode: int, flags: int, ctx: Any) -> pyfuse3.FileInfo:
        fh = await self.fs.open(inode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False)

    @fuse_errors
    async def create(self, parent_inode: int, name: bytes, mode: int, flags: int,
                     ctx: Any) -> tuple[pyfuse3.FileInfo, pyfuse3.EntryAttributes]:
        fh, attr = await self.fs.create(parent_inode, os.fsdecode(name), mode, flags, *_ids(ctx))
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False), self._attrs(attr)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh)

    async def flush(self, fh: int) -> None:
        """ENOSYS, as on read-only mounts: the kernel then never sends FLUSH again (one round trip
        per close saved). There is nothing to flush: no writeback cache, a write() is in the data
        file when it returns, and a close reports no error of its own."""
        self.fs.flushes += 1
        raise pyfuse3.FUSEError(errno.ENOSYS)

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        uid = attr.st_uid if fields.update_uid else None
        gid = attr.st_gid if fields.update_gid else None
        if self.uid != 0 and ((uid is not None and uid != self.uid)
                              or (gid is not None and gid != self.gid and gid not in os.getgroups())):
            raise pyfuse3.FUSEError(errno.EPERM)  # only root gives files away (the kernel checks callers)
        size = attr.st_size if fields.update_size else None
        mode = attr.st_mode if fields.update_mode else None
        mtime = attr.st_mtime_ns if fields.update_mtime else None
        atime = attr.st_atime_ns if fields.update_atime else None
        if mtime is None and size is not None:
            mtime = time.time_ns()
        return self._attrs(await self.fs.setattr(inode, fh, size, mode, mtime, atime, uid, gid))

    # -- names -------------------------------------------------------------------------------

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.fs.mkdir(parent_inode, os.fsdecode(name), mode, *_ids(ctx)))

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.fs.symlink(parent_inode, os.fsdecode(name), os.fsdecode(target),
                                                 *_ids(ctx)))

    @fuse_errors
    async def unlink(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.unlink(parent_inode, os.fsdecode(name))

    @fuse_errors
    async def rmdir(self, parent_inode: int, name: bytes, ctx: Any) -> None:
        await self.fs.rmdir(parent_inode, os.fsdecode(name))

    @fuse_errors
    async def rename(self, parent_inode_old: int, name_old: bytes, parent_inode_new: int, name_new: bytes,
                     flags: int, ctx: Any) -> None:
        await self.fs.rename(parent_inode_old, os.fsdecode(name_old), parent_inode_new,
                             os.fsdecode(name_new), flags)

    @fuse_errors
    async def link(self, inode: int, new_parent_inode: int, new_name: bytes,
                   ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.fs.link(inode, new_parent_inode, os.fsdecode(new_name)))

    @fuse_errors
    async def mknod(self, parent_inode: int, name: bytes, mode: int, rdev: int,
                    ctx: Any) -> pyfuse3.EntryAttributes:
        """Regular files, fifos, sockets, device nodes: kept in the overlay (a commit refuses the
        special ones, naming them; the mount is nodev, so a device node cannot be opened)."""
        return self._attrs(await self.fs.mknod(parent_inode, os.fsdecode(name), mode, rdev, *_ids(ctx)))

    async def setxattr(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    async def removexattr(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.ENOTSUP)
