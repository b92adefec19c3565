"""Reads objects through the local cache: fetch once from the store, verify, cache, count."""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import asdict, dataclass

from fsmount.cache.external import LinkChunks
from fsmount.cache.local_cache import ContentCache, CorruptEntry
from fsmount.errors import FormatError, IntegrityError
from fsmount.format.hashing import digest, object_key, record_key
from fsmount.format.objects import EMPTY_TREE_BYTES, EMPTY_TREE_HASH, Tree, decode_tree
from fsmount.format.records import VersionRecord
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

FROM_STORE, FROM_CACHE, FROM_MEMORY = "store", "cache", "memory"  # where ObjectReader.load found an object


@dataclass
class FetchStats:
    """Counters for `fsmount status` and for tests that count store traffic."""

    objects_fetched: int = 0
    bytes_fetched: int = 0
    cache_hits: int = 0
    cache_misses: int = 0
    integrity_errors: int = 0  # objects from the store that failed their hash, or spans past their object
    cache_integrity_errors: int = 0  # cached objects that failed their checksum (dropped, fetched again)
    store_errors: int = 0

    def as_dict(self) -> dict[str, int]:
        return asdict(self)


class ObjectReader:
    """Content-addressed reads with single-flight fetches and verification.

    Safe to call from many threads: concurrent requests for the same missing object
    share one store GET; requests for different objects run in parallel.

    It also holds the one decoded-tree memory of the process (an LRU of `tree_memory` trees),
    shared by the read-only mount, the overlay's merged view and the API. Its lock is held only
    for dict operations, never during a fetch or a decode, so `cached_tree` is cheap enough for
    an event-loop thread.
    """

    def __init__(self, store: ObjectStore, cache: ContentCache, tree_memory: int = 4096) -> None:
        self.store = store
        self.cache = cache
        self.stats = FetchStats()
        self._lock = threading.Lock()
        self._inflight: dict[bytes, Future[bytes]] = {}
        self._trees: OrderedDict[bytes, Tree] = OrderedDict()
        self._trees_lock = threading.Lock()  # only around _trees operations
        self._tree_memory = tree_memory
        self._write_behind = False
        self.links = LinkChunks()  # external files: chunks read from their URLs (cache/external.py)

    def enable_write_behind(self, max_bytes: int) -> None:
        """Insert fetched objects in the disk cache behind the caller (at most `max_bytes` waiting).

        The verified bytes are returned (and given to concurrent readers of the same object) as
        soon as they are verified; until the cache holds them, a reader asking for the object gets
        those same bytes, never a second GET.
        """
        self.cache.set_write_behind(max_bytes)
        self._write_behind = max_bytes > 0

    def _get_verified(self, h: bytes) -> bytes:
        """GET from the store and verify. Called by one thread per hash."""
        try:
            data = self.links.fetch(h)  # hook: a chunk of an external file (verified there), else None
            if data is not None:
                with self._lock:
                    self.stats.objects_fetched += 1
                    self.stats.bytes_fetched += len(data)
                return data
            data = self.store.get(object_key(h))
        except Exception:
            with self._lock:
                self.stats.store_errors += 1
            raise
        if digest(data) != h:
            with self._lock:
                self.stats.integrity_errors += 1
            log.error("object %s from %s does not match its hash: refusing it", h.hex(), self.store.url)
            raise IntegrityError(f"object {h.hex()} in {self.store.url} is corrupt (hash mismatch)")
        with self._lock:
            self.stats.objects_fetched += 1
            self.stats.bytes_fetched += len(data)
        return data

    def _fetch_once(self, h: bytes) -> bytes:
        with self._lock:
            fut = self._inflight.get(h)
            owner = fut is None
            if owner:
                fut = self._inflight[h] = Future()
        assert fut is not None
        if not owner:
            return fut.result()
        try:
            data = self._get_verified(h)
        except BaseException as e:
            fut.set_exception(e)
            self._done(h)
            raise
        fut.set_result(data)  # waiting readers go on with the verified bytes now
        if self._write_behind:
            # The future stays in _inflight (resolved) until the cache has the object.
            self.cache.put_later(h, data, lambda: self._done(h))
            return data
        try:
            self.cache.put(h, data)
        finally:
            self._done(h)
        return data

    def fetching(self, h: bytes) -> bool:
        """Whether a store fetch of `h` is running right now (cheap, never blocks: for the event loop).

        The read-only mount asks this to decide whether a recent timeout of `h` still stands: while
        the abandoned fetch runs, another request for `h` fails at once instead of waiting again.
        """
        with self._lock:
            fut = self._inflight.get(h)
        return fut is not None and not fut.done()

    def _done(self, h: bytes) -> None:
        with self._lock:
            self._inflight.pop(h, None)

    def _cached(self, h: bytes) -> bytes | None:
        """The checked bytes of `h` from the disk cache; a damaged entry counts as a miss (dropped)."""
        try:
            data = self.cache.get(h)
        except CorruptEntry as e:
            with self._lock:
                self.stats.cache_integrity_errors += 1
            log.warning("%s: dropped it, fetching it again from %s", e, self.store.url)
            data = None
        with self._lock:
            if data is None:
                self.stats.cache_misses += 1
            else:
                self.stats.cache_hits += 1
        return data

    def load(self, h: bytes) -> tuple[bytes, str]:
        """(bytes, FROM_*) for object `h`: bytes being fetched or just fetched by anyone (no cache
        lookup, FROM_MEMORY), else the cached object (read whole and checked), else a fetch."""
        with self._lock:
            fut = self._inflight.get(h)
        if fut is not None:
            return fut.result(), FROM_MEMORY
        data = self._cached(h)
        if data is not None:
            return data, FROM_CACHE
        return self._fetch_once(h), FROM_STORE

    def read(self, h: bytes) -> bytes:
        """The verified bytes of object `h`, from the cache (checked) or else the store."""
        data = self._cached(h)
        return self._fetch_once(h) if data is None else data

    def check_span(self, h: bytes, size: int, offset: int, length: int, whole: bool) -> None:
        """Raise IntegrityError unless a locator's span fits object `h` of `size` bytes.

        A bare-hash locator (`whole`) names the entire object: its size must equal the derived
        length. A ranged locator must end within the object. Otherwise a reader would get a short
        or shifted file. The caller reports the error (the daemon logs it; the CLI prints it).
        """
        if (size == length and offset == 0) if whole else (offset + length <= size):
            return
        with self._lock:
            self.stats.integrity_errors += 1
        want = f"exactly {length} bytes" if whole else f"bytes {offset}..{offset + length}"
        raise IntegrityError(f"object {h.hex()} in {self.store.url} has {size} bytes, a file needs {want}")

    def span(self, h: bytes, offset: int, length: int, whole: bool) -> memoryview:
        """The bytes of one locator: object `h` (verified) sliced, after check_span."""
        data = self.read(h)
        self.check_span(h, len(data), offset, length, whole)
        return memoryview(data)[offset:offset + length]

    def cached_tree(self, h: bytes) -> Tree | None:
        """The decoded tree `h` if it is in memory (then it counts as used), else None. Never blocks
        on I/O: for callers on an event loop, which offload `tree` on a miss."""
        with self._trees_lock:
            t = self._trees.get(h)
            if t is not None:
                self._trees.move_to_end(h)
            return t

    def tree(self, h: bytes) -> Tree:
        """A decoded directory tree: from memory, else read (cache or store), decoded and kept."""
        t = self.cached_tree(h)
        if t is not None:
            return t
        data = EMPTY_TREE_BYTES if h == EMPTY_TREE_HASH else self.read(h)
        t = decode_tree(data)
        with self._trees_lock:
            t = self._trees.setdefault(h, t)  # a concurrent decode of the same tree: keep one object
            self._trees.move_to_end(h)
            if len(self._trees) > self._tree_memory:
                self._trees.popitem(last=False)
        return t

    def record(self, version_id: str) -> VersionRecord:
        """A finalized version's record: immutable, so cached forever once read."""
        data = self.cache.get_meta("version", version_id)
        if data is not None:
            return VersionRecord.decode(data)
        data = self.store.get(record_key(version_id))
        rec = VersionRecord.decode(data)
        if rec.id != version_id:
            raise FormatError(f"record {version_id} in {self.store.url} names another version ({rec.id})")
        self.cache.put_meta("version", version_id, data)
        return rec
