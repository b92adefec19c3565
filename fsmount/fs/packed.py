"""Packed small files on the read path: slices of packs from memory, the page cache, the disk cache,
one whole-pack fetch shared by every reader of the pack, or a ranged GET (docs/SEMANTICS.md "Packed files").

Everything here runs on the trio thread except what `offload` runs; the same rules as fs/blocks.py:
every slice served was checked (a pack in memory by its hash, a cached slice by its pages' CRC32Cs
after a page-in, else by its file's SHA-256).
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from typing import Any

import trio

from fsmount.cache.fetcher import FROM_STORE, ObjectReader
from fsmount.cache.local_cache import PageMiss, WouldBlock
from fsmount.errors import IntegrityError, StoreUnreachable
from fsmount.fs.options import FsOptions
from fsmount.fs.readstats import ReadStats

log = logging.getLogger(__name__)

Source = bytes | bytearray | memoryview
_MEMORY = 4096  # packs remembered per table (misses, bad packs, page-ins), oldest forgotten first
Offload = Callable[..., Awaitable[Any]]


def budget_room(st: ReadStats, options: FsOptions, n: int) -> bool:
    """Whether `n` more bytes fit the global memory budget (prefetches, pack fetches, held blocks)."""
    used = st.pack_inflight_bytes + st.prefetch_inflight_bytes + st.held_bytes
    return used + n <= options.prefetch_budget


def _remember(table: OrderedDict[bytes, Any], h: bytes, value: Any) -> None:
    table.pop(h, None)
    table[h] = value
    if len(table) > _MEMORY:
        table.popitem(last=False)


class PackReads:
    """The packed-file part of one mount's BlockReader (its stats, options and offload)."""

    def __init__(self, reader: ObjectReader, options: FsOptions, stats: ReadStats, offload: Offload) -> None:
        self.reader = reader
        self.options = options
        self.stats = stats
        self.offload = offload
        self.pack_limiter = trio.CapacityLimiter(options.pack_threads)
        self.page_limiter = trio.CapacityLimiter(options.pack_threads)  # page-ins never queue behind GETs
        self._nursery: trio.Nursery | None = None
        self._pack_fetching: dict[bytes, trio.Event] = {}  # packs being fetched whole -> set when done
        self._pack_misses: OrderedDict[bytes, int] = OrderedDict()  # recent packs -> misses seen
        self._bad_packs: OrderedDict[bytes, None] = OrderedDict()  # whole fetch failed: read by ranges
        self._last_miss = -1e9
        self._pack_size = options.pack_size_hint
        self._budget_freed = trio.Event()
        self._paging: dict[bytes, trio.Event] = {}  # cached packs being read into the page cache
        self._paged: OrderedDict[bytes, int] = OrderedDict()  # packs -> page-cache misses seen (then paged)
        self._last_page_miss = -1e9

    def start(self, nursery: trio.Nursery) -> None:
        """Page-ins of cached packs run as tasks of `nursery` (none without it)."""
        self._nursery = nursery

    def _fast(self, h: bytes, off: int, n: int, sha: bytes) -> Source | bool:
        """The slice without a thread hop (memory or page cache), else whether that failed because its
        bytes are not in the page cache (PageMiss) rather than for a cache lookup."""
        try:
            data = self.reader.packed_slice(h, off, n, sha, nowait=True)
        except PageMiss:
            return True
        except WouldBlock:
            return False
        if data is None:
            return False
        self.stats.packed_fast += 1
        return data

    async def read(self, h: bytes, off: int, n: int, sha: bytes) -> Source:
        """The verified bytes of the packed file at [off, off+n) of pack `h` whose SHA-256 is `sha`."""
        self.stats.packed_reads += 1
        data = await self.read_local(h, off, n, sha, wait=True)
        if data is None:
            data = await self._packed_miss(h, off, n, sha)
        return data

    async def read_local(self, h: bytes, off: int, n: int, sha: bytes, wait: bool = False) -> Source | None:
        """The same bytes from memory, the page cache or the disk cache, None when only the store has
        them. Without `wait` (an open), gives up at once where the answer needs a cache lookup or a
        whole-pack fetch in flight: the file's READ then does that work as before."""
        fast = self._fast(h, off, n, sha)
        if not isinstance(fast, bool):
            return fast
        if not (wait or fast or self.reader.in_place):  # not a page-cache miss of an open pack file
            return None
        ev = self._pack_fetching.get(h)
        if ev is not None:
            if not wait:
                return None
            await self._wait_pack(ev)
        elif (fast or h in self._paging) and await self._paged_in(h):  # a page-cache miss, or one runs
            fast = self._fast(h, off, n, sha)
            if not isinstance(fast, bool):
                return fast
        return await self.offload(self.reader.packed_slice, h, off, n, sha)

    # -- cached packs into the page cache --------------------------------------------------

    async def _paged_in(self, h: bytes) -> bool:
        """A page-cache miss of cached pack `h` (RWF_NOWAIT said so: not a cache lookup due). Wait for
        its page-in when one runs; start one when the pack missed before or another pack missed
        within pack_stream_window s (an epoch reads every file of every pack, each time a thread hop
        and a seek of its own otherwise). True when this read waited for a page-in that ended (the
        caller tries the page cache again)."""
        ev = self._paging.get(h)
        if ev is None:
            now = trio.current_time()
            seen = self._paged.get(h, 0)
            _remember(self._paged, h, seen + 1)
            streaming = now - self._last_page_miss < self.options.pack_stream_window
            self._last_page_miss = now
            if not (seen or streaming) or self._nursery is None:  # page_in: False when h is not cached
                return False
            ev = self._paging[h] = trio.Event()
            self._nursery.start_soon(self._page_in, h, ev)
            return False  # the first reader reads its own slice meanwhile
        self.stats.page_waits += 1
        with trio.move_on_after(self.options.pack_wait):
            await ev.wait()
            return True
        return False

    async def _page_in(self, h: bytes, ev: trio.Event) -> None:
        try:
            if await self.offload(self.reader.page_in, h, limiter=self.page_limiter):
                self.stats.page_ins += 1
        except Exception as e:  # only costs the readers their own reads
            log.debug("page-in of pack %s failed: %s", h.hex()[:16], e)
        finally:
            del self._paging[h]
            ev.set()

    # -- packs not in the cache --------------------------------------------------------------

    async def _wait_pack(self, ev: trio.Event) -> None:
        self.stats.pack_waits += 1
        with trio.move_on_after(self.options.pack_wait):
            await ev.wait()
            return
        self.stats.pack_wait_timeouts += 1

    async def _packed_miss(self, h: bytes, off: int, n: int, sha: bytes) -> Source:
        """A packed file not at hand. Fetch its whole pack (and wait for it) when the pack had a miss
        before or another miss came within pack_stream_window seconds (an epoch), memory allowing;
        otherwise, or when the pack cannot be had whole in time, one ranged GET of the file."""
        opts, st = self.options, self.stats
        now = trio.current_time()
        seen = self._pack_misses.get(h, 0)
        _remember(self._pack_misses, h, seen + 1)
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
        if budget_room(self.stats, self.options, est):
            return True
        self.stats.pack_budget_waits += 1
        with trio.move_on_after(self.options.pack_wait):
            while not budget_room(self.stats, self.options, est):
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
            _remember(self._bad_packs, h, None)
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
