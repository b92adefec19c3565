"""The read path's counters (ReadStats), shown by `fsmount status`."""

from __future__ import annotations

from dataclasses import asdict, dataclass


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
    page_ins: int = 0  # cached packs read through once into the page cache (an epoch reading them)
    page_waits: int = 0  # reads that waited for their pack's page-in instead of a thread of their own
    prefilled: int = 0  # packed files whose bytes went into the kernel's page cache at open (no READ sent)

    def as_dict(self) -> dict[str, int]:
        return asdict(self)
