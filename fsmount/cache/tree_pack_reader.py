"""The tree packs of the versions this process reads: a tree missing from memory and the disk cache is
looked up there before it is fetched alone (docs/FORMAT.md §4 "Tree packs", SEMANTICS.md).

The first two misses fetch their trees alone: reading one file of a fresh mount (the root, then the
file's folder) costs small GETs, not a pack (nor a pack download competing with its GETs). The
third miss starts loading the registered packs on a thread and fetches its own tree meanwhile;
misses while the load runs wait for it (an epoch's or a walk's first lookups, all folders at
once). A pack already in the disk cache is read at the first miss. A read-only mount preloads
its version's packs while it starts (`preload`), so none of its lookups waits for a tree GET.

Every tree handed out is one of the pack's entries keyed by its own SHA-256, and the pack itself
was checked against its hash, so a damaged or hostile pack can cost GETs, never a wrong tree.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Iterable

from fsmount.format.tree_packs import TREE_PACK_MAX, decode_tree_pack

log = logging.getLogger(__name__)

MAX_PACKS = 4  # packs registered per process at most (a mount has one; gc reads many records)
LONE_MISSES = 3  # the miss that starts loading the packs (the root and one folder come alone)
LOAD_WAIT = 10.0  # seconds a miss waits for a running load before fetching its tree alone

Loader = Callable[[bytes], tuple[bytes, str]]  # ObjectReader.load: verified bytes of an object


class TreePacks:
    """Registered tree packs, loaded once on the first tree miss."""

    def __init__(self, load: Loader, cached: Callable[[bytes], bool]) -> None:
        self._load = load
        self._cached = cached
        self._lock = threading.Lock()
        self._seen: set[bytes] = set()
        self._pending: list[tuple[bytes, int]] = []
        self._trees: dict[bytes, bytes] = {}
        self._loading: threading.Event | None = None
        self._misses = 0  # trees asked for and not found in a loaded pack
        self.loaded = 0  # packs loaded
        self.failed = 0  # packs that could not be used (damaged, missing, malformed)

    def add(self, packs: Iterable[tuple[bytes, int]]) -> None:
        """Register a version's tree packs (its record's `tree_packs`); oversized ones are ignored."""
        with self._lock:
            for h, size in packs:
                if h not in self._seen and size <= TREE_PACK_MAX and len(self._seen) < MAX_PACKS:
                    self._seen.add(h)
                    self._pending.append((h, size))

    def preload(self) -> threading.Event | None:
        """Start loading every registered pack now, on a thread (a mount, before it reports ready:
        its first lookups then need no GET); the event is set when the load ends. None when there
        is nothing to load. Misses while it runs wait for it, as for a load a third miss started."""
        with self._lock:
            if self._loading is not None:
                return self._loading
            if not self._pending:
                return None
            ev = self._loading = threading.Event()
            todo, self._pending = self._pending, []
        threading.Thread(target=self._run, args=(todo, ev), name="tree-packs", daemon=True).start()
        return ev

    def peek(self, h: bytes) -> bytes | None:
        """The encoded tree `h` if a loaded pack has it, else None: never waits, counts no miss."""
        with self._lock:
            return self._trees.get(h)

    def get(self, h: bytes) -> bytes | None:
        """The encoded tree `h` from a pack, or None: then the caller fetches it alone (the reader
        counts trees served from packs: FetchStats.tree_pack_trees)."""
        with self._lock:
            data = self._trees.get(h)
            if data is not None or (not self._pending and self._loading is None):
                return data
            self._misses += 1
            ev = self._loading
            todo: list[tuple[bytes, int]] = []
            cached = False
            if ev is None:
                cached = all(self._cached(p) for p, _ in self._pending)
                if self._misses < LONE_MISSES and not cached:
                    return None  # the root and one folder (one file of a fresh mount): small GETs
                ev = self._loading = threading.Event()
                todo, self._pending = self._pending, []
        if todo:
            if cached:
                self._run(todo, ev)  # from the disk cache: quicker than a GET of the tree alone
            else:
                threading.Thread(target=self._run, args=(todo, ev), name="tree-packs", daemon=True).start()
                return None  # this miss fetches its own tree while the packs come
        ev.wait(LOAD_WAIT)
        with self._lock:
            return self._trees.get(h)

    def _run(self, todo: list[tuple[bytes, int]], ev: threading.Event) -> None:
        try:
            for h, size in todo:
                try:
                    data, _ = self._load(h)  # checked against its hash (IntegrityError if not)
                    if len(data) != size:
                        raise ValueError(f"{len(data)} bytes, its record says {size}")
                    trees = decode_tree_pack(data)
                except Exception as e:
                    with self._lock:
                        self.failed += 1
                    log.warning("tree pack %s unusable (%s): reading its trees one by one", h.hex()[:16], e)
                    continue
                with self._lock:
                    self._trees.update(trees)
                    self.loaded += 1
        finally:
            with self._lock:
                self._loading = None
            ev.set()
