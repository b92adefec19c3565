"""Reads and writes of a writable mount's data files (copied-up and new files), never stalling the loop.

A read or a rewrite first tries RWF_NOWAIT on the event loop (fs/nowait.py: the page cache
answers at once). ext4 refuses RWF_NOWAIT for every write that extends a file, so such a write
runs inline while the overlay's disk is fast (fs/slowdisk.py: the same pace as changes), and on
a worker thread while it is slow. Offloaded writes do not hold the metadata lock: `quiesce`
waits for those in flight (before a commit or a discard).
"""

from __future__ import annotations

import errno
import os

import trio

from fsmount.errors import FsError
from fsmount.fs.nowait import NoWait
from fsmount.fs.slowdisk import DiskPace
from fsmount.overlay.merged import MergedView
from fsmount.overlay.nodes import Handle


class DataIO:
    """pread/pwrite of one overlay's data files, with the counters `status` shows."""

    def __init__(self, view: MergedView, pace: DiskPace) -> None:
        self.view = view
        self.pace = pace
        self._nowait = NoWait(view.upper.folder)
        self.writes = 0
        self.bytes_written = 0
        self.offloaded = 0  # reads and writes that went to a worker thread
        self._writing = 0  # offloaded writes in flight
        self._writes_done = trio.Event()

    async def pread(self, fd: int, size: int, offset: int) -> bytes | bytearray:
        try:
            buf = self._nowait.pread(fd, size, offset)
            if buf is not None:
                return buf
            self.offloaded += 1
            return await trio.to_thread.run_sync(os.pread, fd, size, offset)
        except OSError as e:
            raise FsError(e.errno or errno.EIO, str(e)) from None

    async def write(self, vfh: int, h: Handle, offset: int, data: bytes) -> int:
        """Write to the data file of handle `h` (view handle `vfh`), which has one (`h.fd`)."""
        assert h.fd is not None
        if not h.writable:
            raise FsError(errno.EBADF)
        try:
            n = None if h.append else self._nowait.pwrite(h.fd, data, offset)
            if n is not None:
                return n
            if self.pace.fast():  # RWF_NOWAIT refuses every write that extends a file: timed inline
                t0 = self.pace.start()
                n = self.view.write(vfh, offset, data)
                self.pace.timed(t0)
                return n
            self.offloaded += 1
            self._writing += 1
            try:
                return await trio.to_thread.run_sync(self.view.write, vfh, offset, data)
            finally:
                self._writing -= 1
                if not self._writing:
                    self._writes_done.set()
        except OSError as e:
            raise FsError(e.errno or errno.EIO, str(e)) from None

    async def quiesce(self) -> None:
        """Wait for offloaded writes already in flight (the caller holds back new ones)."""
        while self._writing:
            self._writes_done = trio.Event()
            await self._writes_done.wait()
