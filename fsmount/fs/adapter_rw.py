"""pyfuse3 operations of a writable mount: the read-only adapter plus every change, sent to WritableFS."""

from __future__ import annotations

import errno
import logging
import os
import time
from typing import Any

import pyfuse3

from fsmount.fs.adapter import Operations, fuse_errors
from fsmount.fs.writable import WritableFS

log = logging.getLogger(__name__)


class WritableOperations(Operations):
    """Operations over a WritableFS. Errors become FUSEError in `fuse_errors`, as for reads."""

    fs: WritableFS  # type: ignore[assignment]

    def __init__(self, fs: WritableFS) -> None:
        super().__init__(fs)  # type: ignore[arg-type]

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
        fh, attr = await self.fs.create(parent_inode, os.fsdecode(name), mode, flags)
        return pyfuse3.FileInfo(fh=fh, keep_cache=False, direct_io=False), self._attrs(attr)

    @fuse_errors
    async def write(self, fh: int, off: int, buf: bytes) -> int:
        return await self.fs.write(fh, off, buf)

    @fuse_errors
    async def fsync(self, fh: int, datasync: bool) -> None:
        await self.fs.fsync(fh)

    async def flush(self, fh: int) -> None:
        return None

    @fuse_errors
    async def setattr(self, inode: int, attr: pyfuse3.EntryAttributes, fields: pyfuse3.SetattrFields,
                      fh: int | None, ctx: Any) -> pyfuse3.EntryAttributes:
        other_uid = fields.update_uid and attr.st_uid != self.uid
        if other_uid or (fields.update_gid and attr.st_gid != self.gid):
            raise pyfuse3.FUSEError(errno.EPERM)  # files belong to the mounting user
        size = attr.st_size if fields.update_size else None
        mode = attr.st_mode if fields.update_mode else None
        mtime = None
        if fields.update_mtime:
            mtime = attr.st_mtime_ns
        elif fields.update_size:
            mtime = time.time_ns()
        return self._attrs(await self.fs.setattr(inode, fh, size, mode, mtime))

    # -- names -------------------------------------------------------------------------------

    @fuse_errors
    async def mkdir(self, parent_inode: int, name: bytes, mode: int, ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.fs.mkdir(parent_inode, os.fsdecode(name), mode))

    @fuse_errors
    async def symlink(self, parent_inode: int, name: bytes, target: bytes,
                      ctx: Any) -> pyfuse3.EntryAttributes:
        return self._attrs(await self.fs.symlink(parent_inode, os.fsdecode(name), os.fsdecode(target)))

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

    async def mknod(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.EPERM)  # device nodes, fifos and sockets cannot be stored

    async def setxattr(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.ENOTSUP)

    async def removexattr(self, *args: Any) -> Any:
        raise pyfuse3.FUSEError(errno.ENOTSUP)
