"""The read path: file ranges to block spans, cached blocks by pread, misses and prefetch on threads.

Concurrency rules (everything here runs on the trio thread except what `_offload` runs):
- worker threads get only a hash and return an open file or bytes; they never touch an
  `OpenFile`, the counters or any other state of this module;
- `OpenFile` state and `ReadStats` change only on the trio thread, between awaits;
- the global prefetch budget counts bytes of blocks being prefetched (a fetched block is held
  in memory until it is verified and written to the disk cache); a prefetch that would exceed
  it is skipped, never queued.
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


@dataclass
class ReadStats:
    """Counters of the read path, shown by `fsmount status`."""

    reads: int = 0
    bytes_served: int = 0
    block_hits: int = 0  # block found in the local cache on first use by an open file
    block_misses: int = 0  # block had to come from the store on a demand read
    prefetch_started: int = 0
    prefetch_fetched: int = 0  # prefetches that actually went to the store
    prefetch_bytes: int = 0
    prefetch_skipped: int = 0  # skipped because the global budget was spent
    prefetch_errors: int = 0
    prefetch_inflight_bytes: int = 0
    errors: int = 0
    timeouts: int = 0
    last_error: str = ""

    def as_dict(self) -> dict[str, int | str]:
        return asdict(self)


class OpenFile:
    """One open() of a file: its spans, block handles it keeps open, its prefetch window."""

    __slots__ = ("entry", "handles", "ino", "last_end", "prefetched_to", "spans", "starts", "window")

    def __init__(self, ino: int, entry: FileEntry) -> None:
        self.ino = ino
        self.entry = entry
        self.spans = list(entry.spans())  # (object hash, offset in object, length, offset in file)
        self.starts = [s[3] for s in self.spans]
        self.handles: OrderedDict[int, Source] = OrderedDict()  # span index -> cached object
        self.last_end = -1  # end of the previous read; -1 before the first
        self.window = 0  # current prefetch window in bytes
        self.prefetched_to = 0  # file offset up to which prefetch has been issued

    def span_index(self, offset: int) -> int:
        return bisect_right(self.starts, offset) - 1

    def close(self) -> None:
        for src in self.handles.values():
            if not isinstance(src, bytes):
                try:
                    src.close()
                except OSError:
                    pass
        self.handles.clear()


class BlockReader:
    """Serves reads of open files from the shared verified cache, fetching what is missing."""

    def __init__(self, reader: ObjectReader, options: FsOptions) -> None:
        self.reader = reader
        self.cache = reader.cache
        self.options = options
        self.stats = ReadStats()
        self.demand_limiter = trio.CapacityLimiter(options.fetch_threads)
        self.prefetch_limiter = trio.CapacityLimiter(options.prefetch_threads)
        self._nursery: trio.Nursery | None = None
        self._prefetching: set[bytes] = set()

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

    # -- blocks ----------------------------------------------------------------------

    def _load_block(self, h: bytes) -> tuple[Source, bool]:
        """(cached object, fetched?) for block `h`. Runs on a worker thread."""
        src = self.cache.open(h)
        if src is not None:
            return src, False
        data = self.reader.read(h)  # single-flight fetch, verified, inserted in the cache
        src = self.cache.open(h)
        return (data if src is None else src), True

    async def _source(self, f: OpenFile, i: int) -> Source:
        src = f.handles.get(i)
        if src is not None:
            f.handles.move_to_end(i)
            return src
        h = f.spans[i][0]
        src, fetched = await self.offload(self._load_block, h)
        if fetched:
            self.stats.block_misses += 1
        else:
            self.stats.block_hits += 1
        f.handles[i] = src
        if len(f.handles) > self.options.handles_per_file:
            _, old = f.handles.popitem(last=False)
            if not isinstance(old, bytes):
                old.close()
        return src

    async def read(self, f: OpenFile, offset: int, size: int) -> bytes:
        """Bytes [offset, offset+size) of the open file, short at the end of the file."""
        entry = f.entry
        end = min(offset + size, entry.size)
        if offset >= end:
            return b""
        parts = []
        pos = offset
        i = f.span_index(offset)
        while pos < end:
            _, obj_off, length, file_off = f.spans[i]
            src = await self._source(f, i)
            a = pos - file_off
            b = min(end, file_off + length) - file_off
            if isinstance(src, bytes):
                parts.append(src[obj_off + a: obj_off + b])
            else:
                chunk = os.pread(src.fileno(), b - a, obj_off + a)
                if len(chunk) != b - a:
                    raise IntegrityError(f"cached block of inode {f.ino} is shorter than expected")
                parts.append(chunk)
            pos = file_off + b
            i += 1
        data = parts[0] if len(parts) == 1 else b"".join(parts)
        self.stats.reads += 1
        self.stats.bytes_served += len(data)
        self._after_read(f, offset, end)
        return data

    # -- prefetch -----------------------------------------------------------------------

    def _after_read(self, f: OpenFile, offset: int, end: int) -> None:
        """Grow the window on a sequential read, reset it on a random one; issue prefetches."""
        opts = self.options
        if offset == f.last_end:
            f.window = min(opts.prefetch_max, max(opts.prefetch_initial, f.window * 2))
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
        while i < len(f.spans) and f.spans[i][3] < target:
            h, _, length, file_off = f.spans[i]
            i += 1
            if i - 1 in f.handles or h in self._prefetching:
                f.prefetched_to = file_off + length
                continue
            if self.stats.prefetch_inflight_bytes + length > opts.prefetch_budget:
                self.stats.prefetch_skipped += 1
                break  # try again on the next read, when the budget may have room
            f.prefetched_to = file_off + length
            self._prefetching.add(h)
            self.stats.prefetch_started += 1
            self.stats.prefetch_inflight_bytes += length
            self._nursery.start_soon(self._prefetch, h, length)

    async def _prefetch(self, h: bytes, length: int) -> None:
        try:
            fetched = await self.offload(self.reader.ensure, h, limiter=self.prefetch_limiter)
            if fetched:
                self.stats.prefetch_fetched += 1
                self.stats.prefetch_bytes += length
        except Exception as e:  # a failed prefetch only costs the demand read a retry
            self.stats.prefetch_errors += 1
            log.debug("prefetch of %s failed: %s", h.hex(), e)
        finally:
            self._prefetching.discard(h)
            self.stats.prefetch_inflight_bytes -= length
