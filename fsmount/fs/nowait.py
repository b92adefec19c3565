"""pread/pwrite that never block the event loop: RWF_NOWAIT first (the page cache answers at once),
None when that would block, so the caller sends the call to a worker thread instead."""

from __future__ import annotations

import errno
import logging
import os

log = logging.getLogger(__name__)

RWF_NOWAIT = getattr(os, "RWF_NOWAIT", 0)


class NoWait:
    """RWF_NOWAIT reads and writes on one filesystem; switched off for good where it is refused."""

    def __init__(self, where: object) -> None:
        self.flag = RWF_NOWAIT
        self.where = where

    def _refused(self, e: OSError) -> None:
        """The filesystem does not take RWF_NOWAIT (tmpfs, older kernels): always offload."""
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):
            raise e
        log.debug("RWF_NOWAIT not supported on %s: reads and writes go to a worker thread", self.where)
        self.flag = 0

    def pread(self, fd: int, size: int, offset: int) -> bytearray | None:
        if not self.flag:
            return None
        buf = bytearray(size)
        try:
            del buf[os.preadv(fd, [buf], offset, self.flag):]
            return buf
        except BlockingIOError:
            return None
        except OSError as e:
            self._refused(e)
            return None

    def pwrite(self, fd: int, data: bytes, offset: int) -> int | None:
        if not self.flag:
            return None
        try:
            return os.pwritev(fd, [data], offset, self.flag)
        except BlockingIOError:
            return None
        except OSError as e:
            self._refused(e)
            return None
