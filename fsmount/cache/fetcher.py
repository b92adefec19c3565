"""Reads objects through the local cache: fetch once from the store, verify, cache, count."""

from __future__ import annotations

import logging
import os
import threading
from collections import OrderedDict
from concurrent.futures import Future
from dataclasses import asdict, dataclass

from fsmount.cache.external import LinkChunks
from fsmount.cache.local_cache import ContentCache, CorruptEntry, WouldBlock
from fsmount.cache.tree_pack_reader import TreePacks
from fsmount.errors import FormatError, IntegrityError, ObjectNotFound
from fsmount.format.hashing import digest, object_key, record_key
from fsmount.format.objects import EMPTY_TREE_BYTES, EMPTY_TREE_HASH, Tree, decode_tree
from fsmount.format.records import VersionRecord
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

ON_LOOP_TREE = 256 * 1024  # largest encoded tree an event loop decodes itself (a larger one goes to a thread)

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
    ranged_fetched: int = 0  # ranged GETs of one packed file's bytes (verified by the file's SHA-256)
    ranged_bytes: int = 0
    packed_cache_hits: int = 0  # packed files read as a slice of a cached or in-memory pack
    in_place_reads: int = 0  # objects or ranges read straight from a local-disk store (not cached)
    tree_pack_trees: int = 0  # trees found in a version's tree pack instead of fetched alone

    @property
    def gets(self) -> int:
        """Store GETs of object bytes: whole objects plus ranges."""
        return self.objects_fetched + self.ranged_fetched

    def as_dict(self) -> dict[str, int]:
        return {**asdict(self), "gets": self.gets}


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
        # A store on a local disk is read in place: no copy in the cache (store.local_path, SEMANTICS.md).
        self.in_place = store.local_path(object_key(EMPTY_TREE_HASH)) is not None
        self._verified: dict[str, tuple[int, int, int, int]] = {}  # in place: path -> identity when verified
        self.links = LinkChunks()  # external files: chunks read from their URLs (cache/external.py)
        self.tree_packs = TreePacks(self.load, self.has_cached)  # registered by registry.readable_record

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
            if self.in_place:
                return self._read_in_place(h)
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

    def _read_in_place(self, h: bytes) -> bytes:
        """An object of a local-disk store, read from its file; its hash is checked on the first read
        of that file in this process, and again whenever the file's identity (device, inode, size,
        mtime) changed since. Nothing goes into the cache."""
        path = self.store.local_path(object_key(h))
        assert path is not None
        try:
            with open(path, "rb") as f:
                st = os.fstat(f.fileno())
                data = f.read()
        except FileNotFoundError:
            # Not in the store (yet): a commit in progress keeps the trees it wrote in the cache
            # until they are uploaded, and tests may take an object away; the cache is checked.
            try:
                cached = self.cache.get(h)
            except CorruptEntry:
                cached = None
            if cached is not None:
                return cached
            with self._lock:
                self.stats.store_errors += 1
            raise ObjectNotFound(f"object {object_key(h)} not found in {self.store.url}") from None
        ident = (st.st_dev, st.st_ino, st.st_size, st.st_mtime_ns)
        with self._lock:
            known = self._verified.get(path) == ident and len(data) == st.st_size
            self.stats.in_place_reads += 1
        if not known:
            if digest(data) != h:
                with self._lock:
                    self.stats.integrity_errors += 1
                    self._verified.pop(path, None)
                log.error("object %s in %s does not match its hash: refusing it", h.hex(), self.store.url)
                raise IntegrityError(f"object {h.hex()} in {self.store.url} is corrupt (hash mismatch)")
            with self._lock:
                self._verified[path] = ident
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
        if self.in_place and not self.links.knows(h):  # read in place: nothing to cache (external files are)
            self._done(h)
            return data
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
        if self.in_place and not self.links.knows(h):
            return None
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

    # -- packed files: ranges of pack objects, verified by the file's SHA-256 or the pack's pages ---

    def packed_slice(self, h: bytes, offset: int, length: int, sha256: bytes,
                     nowait: bool = False) -> bytes | bytearray | memoryview | None:
        """The bytes of a packed file (range [offset, offset+length) of pack `h`, whose SHA-256 is
        `sha256`) if the pack is at hand: in memory (fetched or being handed to the cache: verified
        by the pack's hash) or in the disk cache (the slice alone is read and checked: by the CRC32Cs
        of the pages under it once the pack was paged in, else against `sha256`; a cached pack is
        never re-hashed whole for one file). None if not at hand.

        With `nowait` (the event loop's fast path) nothing may block: WouldBlock is raised when
        the answer needs a cache lookup or a disk read (RWF_NOWAIT: only page-cache hits pass).
        A cached slice that fails its check drops the pack from the cache and counts as not at hand.
        """
        with self._lock:
            fut = self._inflight.get(h)
        if fut is not None and fut.done() and fut.exception() is None:
            data = fut.result()
            if offset + length > len(data):
                self.check_span(h, len(data), offset, length, False)
            with self._lock:
                self.stats.packed_cache_hits += 1
            return data[offset:offset + length]
        if self.in_place:
            if nowait:
                raise WouldBlock()
            return self.fetch_range(h, offset, length, sha256)
        try:
            got = self.cache.read_range(h, offset, length, nowait)
        except CorruptEntry:  # a page under the range failed its CRC32C: dropped already
            self._damaged_pack(h, f"a page under bytes {offset}..{offset + length} failed its CRC32C")
            return None
        if got is None:
            if not nowait:
                with self._lock:
                    self.stats.cache_misses += 1
            return None
        piece, checked = got
        if len(piece) != length or (not checked and digest(memoryview(piece)) != sha256):
            self.cache.discard(h)
            self._damaged_pack(h, f"bytes {offset}..{offset + length} are short or fail their SHA-256")
            return None
        with self._lock:
            self.stats.packed_cache_hits += 1
            self.stats.cache_hits += 1
        return piece

    def fetch_range(self, h: bytes, offset: int, length: int, sha256: bytes) -> bytes:
        """One ranged GET of a packed file's bytes, verified against its SHA-256 (IntegrityError if not).
        Nothing is cached: the whole pack is what the cache keeps (BlockReader decides when)."""
        key = object_key(h)
        try:
            data = self.store.get_range(key, offset, length)
        except Exception:
            with self._lock:
                self.stats.store_errors += 1
            raise
        ok = len(data) == length and digest(data) == sha256
        with self._lock:
            if self.in_place:
                self.stats.in_place_reads += 1
            else:
                self.stats.ranged_fetched += 1
                self.stats.ranged_bytes += len(data)
            if not ok:
                self.stats.integrity_errors += 1
        if not ok:
            log.error("bytes %d..%d of pack %s in %s do not match their file's SHA-256: refusing them",
                      offset, offset + length, h.hex(), self.store.url)
            raise IntegrityError(f"bytes {offset}..{offset + length} of object {h.hex()} in {self.store.url} "
                                 "are corrupt (the file's SHA-256 does not match)")
        return data

    def _damaged_pack(self, h: bytes, what: str) -> None:
        with self._lock:
            self.stats.cache_integrity_errors += 1
        log.warning("cached pack %s: %s; dropped the pack", h.hex(), what)

    def page_in(self, h: bytes) -> bool:
        """Bring cached pack `h` into the page cache in one sequential read, checked, with its page
        checksums kept (ContentCache.page_in), so later packed_slice(nowait=True) calls of its files
        succeed; False if it is not cached or is damaged (then dropped)."""
        if self.in_place and not self.links.knows(h):
            return False
        try:
            return self.cache.page_in(h)
        except CorruptEntry:
            self._damaged_pack(h, "its bytes do not match their checksum")
            return False

    def has_cached(self, h: bytes) -> bool:
        """Whether object `h` is in memory or in the disk cache (a cheap index lookup, no read)."""
        with self._lock:
            fut = self._inflight.get(h)
        if fut is not None and fut.done() and fut.exception() is None:
            return True
        return (not self.in_place or self.links.knows(h)) and h in self.cache

    def cached_tree(self, h: bytes) -> Tree | None:
        """The decoded tree `h` if it is in memory (then it counts as used), else None. Never blocks
        on I/O: for callers on an event loop, which offload `tree` on a miss."""
        with self._trees_lock:
            t = self._trees.get(h)
            if t is not None:
                self._trees.move_to_end(h)
            return t

    def tree_at_hand(self, h: bytes) -> Tree | None:
        """The decoded tree `h` from memory or from a loaded tree pack (decoded here when small: no
        I/O, no wait), else None. For callers on an event loop, which offload `tree` on None."""
        t = self.cached_tree(h)
        if t is not None or self.in_place:
            return t
        data = self.tree_packs.peek(h)
        if data is None or len(data) > ON_LOOP_TREE:
            return None
        with self._lock:
            self.stats.tree_pack_trees += 1
        return self._keep_tree(h, decode_tree(data))

    def tree(self, h: bytes) -> Tree:
        """A decoded directory tree: from memory, else read (cache or store), decoded and kept."""
        t = self.cached_tree(h)
        if t is not None:
            return t
        data = EMPTY_TREE_BYTES if h == EMPTY_TREE_HASH else self._tree_bytes(h)
        return self._keep_tree(h, decode_tree(data))

    def _keep_tree(self, h: bytes, t: Tree) -> Tree:
        with self._trees_lock:
            t = self._trees.setdefault(h, t)  # a concurrent decode of the same tree: keep one object
            self._trees.move_to_end(h)
            if len(self._trees) > self._tree_memory:
                self._trees.popitem(last=False)
        return t

    def _tree_bytes(self, h: bytes) -> bytes:
        """Tree `h`'s verified bytes: a loaded tree pack, else the disk cache, else a tree pack (one
        GET for all of a version's trees, waiting for a load in flight), else the store."""
        data = None if self.in_place else self.tree_packs.peek(h)  # in place: a tree is one local read
        if data is None:
            data = self._cached(h)
            if data is not None:
                return data
            data = None if self.in_place else self.tree_packs.get(h)
        if data is not None:
            with self._lock:
                self.stats.tree_pack_trees += 1
        else:
            data = self._fetch_once(h)
        return data

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
