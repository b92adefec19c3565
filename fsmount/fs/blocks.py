"""The read path: file ranges to block spans; blocks held in memory, from the checked cache or the store.

Concurrency rules (everything here runs on the trio thread except what `offload` runs):
- worker threads get only a hash and return bytes; they never touch an `OpenFile`, the counters
  or any other state of this module;
- `OpenFile` state and `ReadStats` change only on the trio thread, between awaits;
- integrity: every block an open file holds is verified bytes in memory, sliced without a copy.
  A block fetched from the store was checked against its hash; a block from the disk cache was
  read whole on a worker thread and checked against the CRC32C stored with it (ObjectReader.load)
  before any byte of it is served, so a cache file damaged or changed on disk is never served,
  not even while a file is open. Every piece served is checked against its locator first: a
  bare-hash block must be exactly its derived length, a ranged one must end within its object
  (ObjectReader.check_span), so a file is never served short or shifted;
- memory: the global prefetch budget counts bytes of blocks being prefetched plus bytes of blocks
  held in memory by open files. A prefetch that would exceed it is skipped, never queued; a demand
  read past it makes its open file drop its oldest other blocks. Writing fetched blocks to the
  disk cache happens behind the reader (ContentCache.put_later), never on the critical path of a read.
"""

from __future__ import annotations

import logging
from bisect import bisect_right
from collections import OrderedDict
from collections.abc import Callable
from typing import Any, TypeVar

import trio

from fsmount.cache.fetcher import FROM_CACHE, FROM_STORE, ObjectReader
from fsmount.errors import IntegrityError, StoreUnreachable
from fsmount.format.objects import FileEntry
from fsmount.fs.options import FsOptions
from fsmount.fs.packed import PackReads, Source, budget_room
from fsmount.fs.readstats import ReadStats

log = logging.getLogger(__name__)

T = TypeVar("T")
__all__ = ["BlockReader", "OpenFile", "ReadStats", "Source"]
# Source: a verified block held by an open file (bytes; a packed file's bytes may be a bytearray)
Buffer = bytes | bytearray | memoryview
_TIMEOUT_MEMORY = 4096  # objects whose recent timeout is remembered (trio thread only)


class OpenFile:
    """One open() of a file: its spans, the blocks it keeps at hand, its prefetch window."""

    __slots__ = ("closed", "entry", "handles", "held", "ino", "last_end", "owner", "pack", "prefetched_to",
                 "spans", "starts", "window")

    def __init__(self, ino: int, entry: FileEntry) -> None:
        self.ino = ino
        self.entry = entry
        self.spans = list(entry.spans())  # (object hash, offset in object, length, offset in file)
        # A packed file: one ranged locator covering the whole file, checkable by the file's SHA-256.
        # Its one span is held as the file's own bytes (offset 0); `pack` keeps (pack hash, offset).
        self.pack: tuple[bytes, int] | None = None
        if len(entry.blocks) == 1 and not isinstance(entry.blocks[0], bytes) and entry.size > 0 \
                and self.spans[0][2] == entry.size:
            h, off, length, _ = self.spans[0]
            self.pack = (h, off)
            self.spans = [(h, 0, length, 0)]
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
            if not isinstance(src, bytes | bytearray | memoryview):
                try:
                    src.close()
                except OSError:
                    pass
        self.handles.clear()
        if self.owner is not None:
            self.owner.stats.held_bytes -= self.held
        self.held = 0


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
        self._timed_out: dict[bytes, tuple[float, float]] = {}  # hash -> (fail at once until, timeout)
        self.packs = PackReads(reader, options, self.stats, self.offload)  # packed small files
        if options.write_behind:
            reader.enable_write_behind(options.write_behind)

    def start(self, nursery: trio.Nursery) -> None:
        """Enable prefetch: background fetches run as tasks of `nursery`."""
        self._nursery = nursery
        self.packs.start(nursery)

    # -- offloading ---------------------------------------------------------------

    async def offload(self, fn: Callable[..., T], *args: Any, limiter: trio.CapacityLimiter | None = None,
                      timeout: float | None = None, key: bytes | None = None) -> T:
        """Run blocking `fn` on a worker thread; give up (EIO) after `timeout` seconds.

        With `key` (an object's hash) a timeout is remembered for `timeout` seconds while the
        abandoned fetch still runs: further requests for that object fail at once instead of
        waiting the full timeout again (the kernel retries a failed read with a second request; the
        user's read must fail after the timeout, not twice it). A request after that joins the
        running fetch (ObjectReader's single flight) rather than starting another; once the fetch
        has ended (the store answered, or failed), the memory is dropped and the object is asked
        for anew. Only timeouts are remembered: a store error or a missing object is answered anew
        by every request, so reads recover as soon as the store does.
        """
        timeout = self.options.fetch_timeout if timeout is None else timeout
        if key is not None and self._timed_out:
            self._check_timed_out(key)
        with trio.move_on_after(timeout) as scope:
            return await trio.to_thread.run_sync(fn, *args, limiter=limiter or self.demand_limiter,
                                                 abandon_on_cancel=True)
        assert scope.cancelled_caught
        self.stats.timeouts += 1
        if key is not None:
            self._remember_timeout(key, timeout)
        raise StoreUnreachable(f"store did not answer within {timeout:g} s")

    def _check_timed_out(self, key: bytes) -> None:
        entry = self._timed_out.get(key)
        if entry is None:
            return
        until, timeout = entry
        now = trio.current_time()
        if now >= until or not self.reader.fetching(key):  # expired, or the abandoned fetch has ended
            del self._timed_out[key]
            return
        self.stats.timeouts += 1
        raise StoreUnreachable(f"store did not answer within {timeout:g} s "
                               f"(object {key.hex()[:16]}, {timeout - (until - now):.1f} s ago)")

    def _remember_timeout(self, key: bytes, timeout: float) -> None:
        now = trio.current_time()
        if len(self._timed_out) >= _TIMEOUT_MEMORY:  # forget the expired ones first, then the oldest
            for k in [k for k, (until, _) in self._timed_out.items() if until <= now]:
                del self._timed_out[k]
            while len(self._timed_out) >= _TIMEOUT_MEMORY:
                del self._timed_out[next(iter(self._timed_out))]
        self._timed_out[key] = (now + timeout, timeout)

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
        if isinstance(src, bytes | bytearray | memoryview):
            f.held += len(src)
            self.stats.held_bytes += len(src)
        if f.owner is None:
            f.owner = self
        while len(f.handles) > self.options.handles_per_file:
            _, gone = f.handles.popitem(last=False)
            self._drop(f, gone)

    def _drop(self, f: OpenFile, src: Source) -> None:
        if isinstance(src, bytes | bytearray | memoryview):
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
        if f.pack is not None:
            src = await self._packed(f)
            if f.closed:
                raise IntegrityError(f"inode {f.ino} was closed during a read")
            self._keep(f, 0, src)
            return src
        h = f.spans[i][0]
        src, origin = await self.offload(self.reader.load, h, key=h)
        if origin == FROM_STORE:
            self.stats.block_misses += 1
        elif origin == FROM_CACHE:
            self.stats.block_hits += 1
        else:
            self.stats.memory_hits += 1
        if f.closed:
            raise IntegrityError(f"inode {f.ino} was closed during a read")
        cur = f.handles.get(i)
        if cur is not None:  # a prefetch landed while we waited: use it, drop ours
            return cur
        self._keep(f, i, src)
        for j in [j for j in f.handles if j != i]:  # over the budget: drop this file's oldest others
            if self.stats.held_bytes <= self.options.prefetch_budget:
                break
            self._drop(f, f.handles.pop(j))
        return src

    # -- packed small files: fsmount/fs/packed.py -----------------------------------

    async def _packed(self, f: OpenFile) -> Source:
        assert f.pack is not None
        h, off = f.pack
        return await self.packs.read(h, off, f.entry.size, f.entry.sha256)

    async def prefill(self, f: OpenFile) -> Source | None:
        """A packed file's whole verified bytes at open, from memory, the page cache or the disk cache
        (never the store), held by the open file; None when the store alone has them. For the kernel's
        page cache: the file's READs are then never sent."""
        if f.pack is None or f.entry.size > self.options.prefill_max:
            return None
        held = f.handles.get(0)
        if held is None:
            h, off = f.pack
            try:
                held = await self.packs.read_local(h, off, f.entry.size, f.entry.sha256)
            except Exception as e:  # a damaged or unreachable object: the open stands, its READ fails
                log.debug("no prefill of inode %d: %s", f.ino, e)
                return None
            if held is None or f.closed:
                return None
            self.stats.packed_reads += 1
            self._keep(f, 0, held)
        self.stats.prefilled += 1
        return held

    def _budget_room(self, n: int) -> bool:
        return budget_room(self.stats, self.options, n)

    def _piece(self, f: OpenFile, i: int, src: Source, start: int, n: int) -> Buffer:
        """`n` bytes at `start` of span `i`'s block: a slice of memory, once the span fits the block."""
        h, obj_off, length, _ = f.spans[i]
        self.reader.check_span(h, len(src), obj_off, length, isinstance(f.entry.blocks[i], bytes))
        if start == 0 and n == len(src):
            return src
        return memoryview(src)[start:start + n]

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
            data = self._piece(f, i, src, obj_off + offset - file_off, end - offset)
        else:
            parts: list[Buffer] = []
            pos = offset
            while pos < end:
                _, obj_off, length, file_off = f.spans[i]
                src = await self._source(f, i)
                a = pos - file_off
                b = min(end, file_off + length) - file_off
                parts.append(self._piece(f, i, src, obj_off + a, b - a))
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
        if not f.window or self._nursery is None or f.pack is not None:  # a packed file is one held span
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
            if not self._budget_room(length):
                st.prefetch_skipped += 1
                break  # try again on the next read, when the budget may have room
            f.prefetched_to = file_off + length
            self._prefetching.add(h)
            st.prefetch_started += 1
            st.prefetch_inflight_bytes += length
            self._nursery.start_soon(self._prefetch, f, i - 1, h, length)

    async def _prefetch(self, f: OpenFile, i: int, h: bytes, length: int) -> None:
        try:
            src, origin = await self.offload(self.reader.load, h, limiter=self.prefetch_limiter)
            if origin == FROM_STORE:
                self.stats.prefetch_fetched += 1
                self.stats.prefetch_bytes += length
            passed = f.window and f.last_end >= f.spans[i][3] + length  # a sequential reader went past it
            if f.closed or passed or i in f.handles:
                if not isinstance(src, bytes | bytearray | memoryview):
                    src.close()
            else:
                self._keep(f, i, src)
        except Exception as e:  # a failed prefetch only costs the demand read a retry
            self.stats.prefetch_errors += 1
            log.debug("prefetch of %s failed: %s", h.hex(), e)
        finally:
            self._prefetching.discard(h)
            self.stats.prefetch_inflight_bytes -= length
