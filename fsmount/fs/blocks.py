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
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

import trio

from fsmount.cache.fetcher import FROM_CACHE, FROM_STORE, ObjectReader
from fsmount.cache.local_cache import WouldBlock
from fsmount.errors import IntegrityError, StoreUnreachable
from fsmount.format.objects import FileEntry
from fsmount.fs.options import FsOptions

log = logging.getLogger(__name__)

T = TypeVar("T")
Source = bytes  # a verified block held by an open file
Buffer = bytes | bytearray | memoryview
_TIMEOUT_MEMORY = 4096  # objects whose recent timeout is remembered (trio thread only)


@dataclass
class ReadStats:
    """Counters of the read path, shown by `fsmount status`."""

    reads: int = 0
    bytes_served: int = 0
    block_hits: int = 0  # block found in the local cache on first use by an open file
    block_misses: int = 0  # block had to come from the store on a demand read
    memory_hits: int = 0  # block being fetched or just fetched by another reader: no cache lookup
    largest_read: int = 0  # largest request the kernel sent (bytes)
    prefetch_started: int = 0
    prefetch_fetched: int = 0  # prefetches that actually went to the store
    prefetch_bytes: int = 0
    prefetch_skipped: int = 0  # skipped because the global budget was spent
    prefetch_errors: int = 0
    prefetch_inflight_bytes: int = 0
    held_bytes: int = 0  # verified blocks kept in memory by open files
    timeouts: int = 0
    packed_reads: int = 0  # packed small files loaded by open files (any source)
    packed_fast: int = 0  # ... of them served on the event loop from memory or the page cache (no thread)
    pack_fetches: int = 0  # whole packs fetched from the store (one GET each)
    pack_bytes: int = 0
    pack_waits: int = 0  # reads that waited for a pack being fetched
    pack_wait_timeouts: int = 0  # ... and gave up after pack_wait, reading their range instead
    pack_budget_waits: int = 0  # whole-pack fetches that waited for memory budget
    pack_errors: int = 0  # whole-pack fetches that failed (a damaged pack is then read range by range)
    pack_inflight_bytes: int = 0
    ranged_reads: int = 0  # packed files read by a ranged GET of their bytes

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


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
            if not isinstance(src, bytes):
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
        self.pack_limiter = trio.CapacityLimiter(options.pack_threads)
        self._pack_fetching: dict[bytes, trio.Event] = {}  # packs being fetched whole -> set when done
        self._pack_misses: OrderedDict[bytes, int] = OrderedDict()  # recent packs -> misses seen
        self._bad_packs: OrderedDict[bytes, None] = OrderedDict()  # whole fetch failed: read by ranges
        self._last_miss = -1e9
        self._pack_size = options.pack_size_hint
        self._budget_freed = trio.Event()
        if options.write_behind:
            reader.enable_write_behind(options.write_behind)

    def start(self, nursery: trio.Nursery) -> None:
        """Enable prefetch: background fetches run as tasks of `nursery`."""
        self._nursery = nursery

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

    # -- packed small files ------------------------------------------------------------

    def _budget_room(self, n: int) -> bool:
        st = self.stats
        used = st.pack_inflight_bytes + st.prefetch_inflight_bytes + st.held_bytes
        return used + n <= self.options.prefetch_budget

    async def _packed(self, f: OpenFile) -> bytes:
        """The verified bytes of packed file `f`: from memory or the cache (a slice of its pack), else
        from the whole pack fetched once for every reader of it, else by a ranged GET (the policy is
        in _packed_miss; docs/SEMANTICS.md "Packed files")."""
        assert f.pack is not None
        h, off = f.pack
        n, sha = f.entry.size, f.entry.sha256
        st = self.stats
        st.packed_reads += 1
        try:  # the warm fast path: no thread hop when the slice is in memory or the page cache
            data = self.reader.packed_slice(h, off, n, sha, nowait=True)
            if data is not None:
                st.packed_fast += 1
                return data
        except WouldBlock:
            pass
        ev = self._pack_fetching.get(h)
        if ev is not None:
            await self._wait_pack(ev)
        data = await self.offload(self.reader.packed_slice, h, off, n, sha)
        if data is None:
            data = await self._packed_miss(h, off, n, sha)
        return data

    async def _wait_pack(self, ev: trio.Event) -> None:
        self.stats.pack_waits += 1
        with trio.move_on_after(self.options.pack_wait):
            await ev.wait()
            return
        self.stats.pack_wait_timeouts += 1

    async def _packed_miss(self, h: bytes, off: int, n: int, sha: bytes) -> bytes:
        """A packed file not at hand. Fetch its whole pack (and wait for it) when the pack had a miss
        before or another miss came within pack_stream_window seconds (an epoch), memory allowing;
        otherwise, or when the pack cannot be had whole in time, one ranged GET of the file."""
        opts, st = self.options, self.stats
        now = trio.current_time()
        seen = self._pack_misses.pop(h, 0)
        self._pack_misses[h] = seen + 1
        if len(self._pack_misses) > _TIMEOUT_MEMORY:
            self._pack_misses.popitem(last=False)
        streaming = now - self._last_miss < opts.pack_stream_window
        self._last_miss = now
        whole = (seen or streaming) and h not in self._bad_packs and not self.reader.in_place
        if whole:
            ev = self._pack_fetching.get(h)
            if ev is None and await self._room_for_pack():
                ev = self._pack_fetching.get(h)  # someone may have started it while we waited
                if ev is None:
                    await self._fetch_pack(h)
                    ev = None
            if ev is not None:
                await self._wait_pack(ev)
            data = await self.offload(self.reader.packed_slice, h, off, n, sha)
            if data is not None:
                return data
        st.ranged_reads += 1
        return await self.offload(self.reader.fetch_range, h, off, n, sha)

    async def _room_for_pack(self) -> bool:
        """Wait (at most pack_wait s) until the memory budget has room for one more pack fetch."""
        est = self._pack_size
        if est > self.options.prefetch_budget:
            return False
        if self._budget_room(est):
            return True
        self.stats.pack_budget_waits += 1
        with trio.move_on_after(self.options.pack_wait):
            while not self._budget_room(est):
                await self._budget_freed.wait()
            return True
        return False

    async def _fetch_pack(self, h: bytes) -> None:
        """Fetch pack `h` whole (single flight, verified by its hash, into the cache), counted in the
        budget while it is in flight; every reader waiting for it is woken when it ends."""
        st = self.stats
        ev = self._pack_fetching[h] = trio.Event()
        est = self._pack_size
        st.pack_inflight_bytes += est
        try:
            data, origin = await self.offload(self.reader.load, h, limiter=self.pack_limiter, key=h)
            if origin == FROM_STORE:
                st.pack_fetches += 1
                st.pack_bytes += len(data)
            self._pack_size = max(self.options.pack_size_hint // 4, len(data))
        except IntegrityError as e:  # a damaged pack: its files are read by ranges, each checked alone
            st.pack_errors += 1
            self._bad_packs[h] = None
            if len(self._bad_packs) > _TIMEOUT_MEMORY:
                self._bad_packs.popitem(last=False)
            log.warning("pack %s: %s; reading its files one range at a time", h.hex()[:16], e)
        except StoreUnreachable:  # a stalled store: the read fails after one timeout, not two
            st.pack_errors += 1
            raise
        except Exception as e:
            st.pack_errors += 1
            log.debug("whole fetch of pack %s failed: %s", h.hex()[:16], e)
        finally:
            st.pack_inflight_bytes -= est
            del self._pack_fetching[h]
            ev.set()
            self._budget_freed.set()
            self._budget_freed = trio.Event()

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
