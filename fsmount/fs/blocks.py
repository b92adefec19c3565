"""The read path: file ranges to block spans; blocks served from memory, cached files or the store.

Concurrency rules (everything here runs on the trio thread except what `offload` runs):
- worker threads get only a hash (or a private dup of a descriptor) and return an open file or
  bytes; they never touch an `OpenFile`, the counters or any other state of this module;
- `OpenFile` state and `ReadStats` change only on the trio thread, between awaits;
- memory: blocks fetched from the store are served from memory (verified bytes, sliced without a
  copy) while the open file keeps them; the global prefetch budget counts bytes of blocks being
  prefetched plus bytes of blocks held in memory by open files. A prefetch that would exceed it is
  skipped, never queued. Writing fetched blocks to the disk cache happens behind the reader
  (ContentCache.put_later), never on the critical path of a read.
- a block already in the disk cache is read with `preadv(RWF_NOWAIT)` on the trio thread when its
  pages are in the page cache (no thread hop); otherwise the read goes to a worker thread on a dup
  of the descriptor, so a slow disk never stalls the event loop and an evicted handle is never
  read after it was closed.
"""

from __future__ import annotations

import logging
import os
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import asdict, dataclass
from typing import Any, BinaryIO, TypeVar

import trio

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import IntegrityError, StoreUnreachable
from fsmount.format.objects import FileEntry
from fsmount.fs.options import FsOptions

log = logging.getLogger(__name__)

T = TypeVar("T")
Source = BinaryIO | bytes
Buffer = bytes | bytearray | memoryview
_NOWAIT = getattr(os, "RWF_NOWAIT", 0)
_WILLNEED = getattr(os, "POSIX_FADV_WILLNEED", None)


@dataclass
class ReadStats:
    """Counters of the read path, shown by `fsmount status`."""

    reads: int = 0
    bytes_served: int = 0
    block_hits: int = 0  # block found in the local cache on first use by an open file
    block_misses: int = 0  # block had to come from the store on a demand read
    memory_hits: int = 0  # block served from memory (prefetched or just fetched), no thread hop
    slow_preads: int = 0  # cached block not in the page cache: read on a worker thread
    largest_read: int = 0  # largest request the kernel sent (bytes)
    prefetch_started: int = 0
    prefetch_fetched: int = 0  # prefetches that actually went to the store
    prefetch_bytes: int = 0
    prefetch_skipped: int = 0  # skipped because the global budget was spent
    prefetch_errors: int = 0
    prefetch_inflight_bytes: int = 0
    held_bytes: int = 0  # verified blocks kept in memory by open files
    timeouts: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class OpenFile:
    """One open() of a file: its spans, the blocks it keeps at hand, its prefetch window."""

    __slots__ = ("closed", "entry", "handles", "held", "ino", "last_end", "owner", "prefetched_to", "spans",
                 "starts", "window")

    def __init__(self, ino: int, entry: FileEntry) -> None:
        self.ino = ino
        self.entry = entry
        self.spans = list(entry.spans())  # (object hash, offset in object, length, offset in file)
        self.starts = [s[3] for s in self.spans]
        self.handles: OrderedDict[int, Source] = OrderedDict()  # span index -> bytes or open cache file
        self.held = 0  # bytes of `handles` that are in memory
        self.owner: BlockReader | None = None  # the reader whose budget `held` is counted in
        self.closed = False
        self.last_end = -1  # end of the previous read; -1 before the first
        self.window = 0  # current prefetch window in bytes
        self.prefetched_to = 0  # file offset up to which prefetch has been issued

    def span_index(self, offset: int) -> int:
        return bisect_right(self.starts, offset) - 1

    def close(self) -> None:
        self.closed = True
        for src in self.handles.values():
            if not isinstance(src, bytes):
                try:
                    src.close()
                except OSError:
                    pass
        self.handles.clear()
        if self.owner is not None:
            self.owner.stats.held_bytes -= self.held
        self.held = 0


def _pread_fd(fd: int, n: int, off: int) -> bytes:
    """pread on a private descriptor (a dup), closed afterwards. Runs on a worker thread."""
    try:
        return os.pread(fd, n, off)
    finally:
        os.close(fd)


class BlockReader:
    """Serves reads of open files from memory and the shared verified cache, fetching what is missing."""

    def __init__(self, reader: ObjectReader, options: FsOptions) -> None:
        self.reader = reader
        self.cache = reader.cache
        self.options = options
        self.stats = ReadStats()
        self.demand_limiter = trio.CapacityLimiter(options.fetch_threads)
        self.prefetch_limiter = trio.CapacityLimiter(options.prefetch_threads)
        self._nursery: trio.Nursery | None = None
        self._prefetching: set[bytes] = set()
        if options.write_behind:
            reader.enable_write_behind(options.write_behind)

    def start(self, nursery: trio.Nursery) -> None:
        """Enable prefetch: background fetches run as tasks of `nursery`."""
        self._nursery = nursery

    # -- offloading ---------------------------------------------------------------

    async def offload(self, fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None,
                      timeout: float | None = None) -> T:
        """Run blocking `fn` on a worker thread; give up (EIO) after `timeout` seconds."""
        timeout = self.options.fetch_timeout if timeout is None else timeout
        with trio.move_on_after(timeout) as scope:
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter or self.demand_limiter,
                                                 abandon_on_cancel=True)
        assert scope.cancelled_caught
        self.stats.timeouts += 1
        raise StoreUnreachable(f"store did not answer within {timeout:g} s")

    # -- blocks held by open files ----------------------------------------------------------

    def _keep(self, f: OpenFile, i: int, src: Source) -> None:
        """Give open file `f` the source of span `i` (trio thread); evict its oldest beyond the limit."""
        old = f.handles.pop(i, None)
        if old is not None and old is not src:
            self._drop(f, old)
        elif old is not None:
            f.handles[i] = src
            return
        f.handles[i] = src
        if isinstance(src, bytes):
            f.held += len(src)
            self.stats.held_bytes += len(src)
        if f.owner is None:
            f.owner = self
        while len(f.handles) > self.options.handles_per_file:
            _, gone = f.handles.popitem(last=False)
            self._drop(f, gone)

    def _drop(self, f: OpenFile, src: Source) -> None:
        if isinstance(src, bytes):
            f.held -= len(src)
            self.stats.held_bytes -= len(src)
        else:
            try:
                src.close()
            except OSError:
                pass

    def _forget_before(self, f: OpenFile, i: int) -> None:
        """A sequential reader has passed span `i`: free what it holds of earlier spans."""
        if i and (i - 1) in f.handles:
            for j in [j for j in f.handles if j < i]:
                self._drop(f, f.handles.pop(j))

    async def _source(self, f: OpenFile, i: int) -> Source:
        held = f.handles.get(i)
        if held is not None:
            f.handles.move_to_end(i)
            return held
        src, fetched = await self.offload(self.reader.load, f.spans[i][0])
        if fetched:
            self.stats.block_misses += 1
        elif isinstance(src, bytes):
            self.stats.memory_hits += 1
        else:
            self.stats.block_hits += 1
        if f.closed:
            if not isinstance(src, bytes):
                src.close()
            raise IntegrityError(f"inode {f.ino} was closed during a read")
        cur = f.handles.get(i)
        if cur is not None:  # a prefetch landed while we waited: use it, drop ours
            if cur is not src and not isinstance(src, bytes):
                src.close()
            return cur
        self._keep(f, i, src)
        return src

    async def _piece(self, f: OpenFile, src: Source, start: int, n: int) -> Buffer:
        """`n` bytes at `start` of one block: a slice of memory, or a pread of the cache file."""
        if isinstance(src, bytes):
            if start == 0 and n == len(src):
                return src
            return memoryview(src)[start:start + n]
        fd = src.fileno()
        buf = bytearray(n)
        got = 0
        if _NOWAIT:
            try:
                got = os.preadv(fd, [buf], start, _NOWAIT)
            except BlockingIOError:
                got = 0
            except OSError as e:
                if e.errno not in (95, 22):  # EOPNOTSUPP, EINVAL: no RWF_NOWAIT on this filesystem
                    raise
                got = 0
        if got < n:
            self.stats.slow_preads += 1
            rest = await self.offload(_pread_fd, os.dup(fd), n - got, start + got)
            buf[got:got + len(rest)] = rest
            got += len(rest)
        if got != n:
            raise IntegrityError(f"cached block of inode {f.ino} is shorter than expected")
        return buf

    async def read(self, f: OpenFile, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of the open file, short at the end of the file."""
        return bytes(await self.read_buffer(f, offset, size))

    async def read_buffer(self, f: OpenFile, offset: int, size: int) -> Buffer:
        """Like read(), but may return a view into a block held in memory (no copy)."""
        end = min(offset + size, f.entry.size)
        if offset >= end:
            return b""
        i = f.span_index(offset)
        _, obj_off, length, file_off = f.spans[i]
        if end <= file_off + length:  # the common case: within one block
            src = f.handles.get(i)
            if src is None:
                src = await self._source(f, i)
            data = await self._piece(f, src, obj_off + offset - file_off, end - offset)
        else:
            parts: list[Buffer] = []
            pos = offset
            while pos < end:
                _, obj_off, length, file_off = f.spans[i]
                src = await self._source(f, i)
                a = pos - file_off
                b = min(end, file_off + length) - file_off
                parts.append(await self._piece(f, src, obj_off + a, b - a))
                pos = file_off + b
                i += 1
            data = b"".join(parts)
        st = self.stats
        st.reads += 1
        st.bytes_served += end - offset
        if end - offset > st.largest_read:
            st.largest_read = end - offset
        self._after_read(f, offset, end)
        return data

    # -- prefetch -----------------------------------------------------------------------

    def _after_read(self, f: OpenFile, offset: int, end: int) -> None:
        """Grow the window on a sequential read, reset it on a random one; issue prefetches."""
        opts = self.options
        if offset == f.last_end:
            f.window = min(opts.prefetch_max, max(opts.prefetch_initial, f.window * 2))
            self._forget_before(f, f.span_index(offset))
        else:
            f.window = 0
            f.prefetched_to = 0
        f.last_end = end
        if not f.window or self._nursery is None:
            return
        target = min(f.entry.size, end + f.window)
        start = max(end, f.prefetched_to)
        if start >= target:
            return
        i = f.span_index(start)
        st = self.stats
        while i < len(f.spans) and f.spans[i][3] < target:
            h, _, length, file_off = f.spans[i]
            i += 1
            if i - 1 in f.handles or h in self._prefetching:
                f.prefetched_to = file_off + length
                continue
            if st.prefetch_inflight_bytes + st.held_bytes + length > opts.prefetch_budget:
                st.prefetch_skipped += 1
                break  # try again on the next read, when the budget may have room
            f.prefetched_to = file_off + length
            self._prefetching.add(h)
            st.prefetch_started += 1
            st.prefetch_inflight_bytes += length
            self._nursery.start_soon(self._prefetch, f, i - 1, h, length)

    @staticmethod
    def _prefetch_load(reader: ObjectReader, h: bytes) -> tuple[Source, bool]:
        """Worker thread: the block in memory (fetched) or its cache file, with readahead started."""
        src, fetched = reader.load(h)
        if not isinstance(src, bytes) and _WILLNEED is not None:
            try:
                os.posix_fadvise(src.fileno(), 0, 0, _WILLNEED)
            except OSError:
                pass
        return src, fetched

    async def _prefetch(self, f: OpenFile, i: int, h: bytes, length: int) -> None:
        try:
            src, fetched = await self.offload(self._prefetch_load, self.reader, h,
                                              limiter=self.prefetch_limiter)
            if fetched:
                self.stats.prefetch_fetched += 1
                self.stats.prefetch_bytes += length
            passed = f.window and f.last_end >= f.spans[i][3] + length  # a sequential reader went past it
            if f.closed or passed or i in f.handles:
                if not isinstance(src, bytes):
                    src.close()
            else:
                self._keep(f, i, src)
        except Exception as e:  # a failed prefetch only costs the demand read a retry
            self.stats.prefetch_errors += 1
            log.debug("prefetch of %s failed: %s", h.hex(), e)
        finally:
            self._prefetching.discard(h)
            self.stats.prefetch_inflight_bytes -= length
