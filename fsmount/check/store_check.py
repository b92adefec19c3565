"""`fsmount check`: a whole store's invariants, restic-check style (states, records, trees, blocks, orphans).

What must hold (docs/FORMAT.md §7): a state that says final or published has its record, and
every tree and block under the record's root exists with the right size (with read_data: the
right bytes); every record, a draft's included, names trees that exist (its base too: gc keeps a
base's trees); parents exist and form no cycle; nothing carries a format number from the future.
A bad object is reported by key and the check goes on. Objects nothing references (orphans) and
stale lock objects are listed, not counted as problems: gc collects them. Each metadata index
names its version and attachment blobs that exist with their sizes (with read_data: their bytes).

Everything is read from the store itself, never from the local cache.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import asdict, dataclass, field
from typing import Any, TypeVar

from fsmount.commit.attachments import BLOB_PREFIX, INDEX_PREFIX, blob_key
from fsmount.commit.locks import STALE_AFTER
from fsmount.errors import FormatError, ObjectNotFound
from fsmount.format.hashing import digest, hash_from_key, is_version_id, object_key, record_key
from fsmount.format.objects import DirEntry, FileEntry, Tree, decode_tree
from fsmount.format.records import READABLE_STATES, MetadataIndex, VersionRecord, VersionState
from fsmount.store.base import ObjectInfo, ObjectStore

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True, slots=True)
class Problem:
    """One broken invariant, named by the store key it is about."""

    key: str
    message: str

    def __str__(self) -> str:
        return f"{self.key}: {self.message}"


@dataclass
class CheckStats:
    states: int = 0
    by_state: dict[str, int] = field(default_factory=dict)
    records: int = 0
    trees: int = 0
    blocks: int = 0
    block_bytes: int = 0
    bytes_read: int = 0
    objects: int = 0
    object_bytes: int = 0
    orphans: int = 0
    orphan_bytes: int = 0
    locks: int = 0
    stale_locks: int = 0


@dataclass
class CheckReport:
    """What `check_store` found: problems (the store is broken) and notes (gc will tidy them)."""

    problems: list[Problem] = field(default_factory=list)
    stats: CheckStats = field(default_factory=CheckStats)
    orphans: list[str] = field(default_factory=list)  # keys of objects nothing references
    stale_locks: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def to_json(self) -> dict[str, Any]:
        return {
            "ok": self.ok,
            "problems": [asdict(p) for p in self.problems],
            "stats": asdict(self.stats),
            "orphans": self.orphans,
            "stale_locks": self.stale_locks,
            "notes": self.notes,
        }


@dataclass
class _Need:
    """What the versions need of one block object: an exact size (bare locators), a minimum size
    (ranged ones), and where it was first seen (for the message)."""

    where: str
    exact: int | None = None
    end: int = 0


def _pmap(pool: ThreadPoolExecutor, fn: Callable[[T], R], items: Iterable[T]) -> list[tuple[T, R]]:
    items = list(items)
    return list(zip(items, pool.map(fn, items), strict=True))


class _Checker:
    def __init__(self, store: ObjectStore, read_data: bool, workers: int) -> None:
        self.store = store
        self.read_data = read_data
        self.pool = ThreadPoolExecutor(max(1, workers), thread_name_prefix="check")
        self.report = CheckReport()
        self.states: dict[str, VersionState] = {}
        self.records: dict[str, VersionRecord] = {}
        self.trees_seen: set[bytes] = set()
        self.totals: dict[bytes, tuple[int, int]] = {}  # root hash -> (files, bytes) of its tree
        self.blocks: dict[bytes, _Need] = {}

    def problem(self, key: str, message: str) -> None:
        self.report.problems.append(Problem(key, message))

    # -- metadata ------------------------------------------------------------------------------

    def _read(self, key: str, decode: Callable[[bytes], T]) -> T | None:
        try:
            data = self.store.get(key)
        except ObjectNotFound:
            return None  # deleted while we listed
        try:
            return decode(data)
        except FormatError as e:
            self.problem(key, str(e))
            return None

    def load_metadata(self) -> None:
        ids = [i.key.rsplit("/", 1)[-1] for i in self.store.list("state/")]
        for vid, st in _pmap(self.pool, lambda v: self._read(f"state/{v}", VersionState.decode),
                             [i for i in ids if is_version_id(i)]):
            if st is None:
                continue
            if st.id != vid:
                self.problem(f"state/{vid}", f"the state names another version ({st.id})")
                continue
            self.states[vid] = st
        ids = [i.key.rsplit("/", 1)[-1] for i in self.store.list("versions/")]
        for vid, rec in _pmap(self.pool, lambda v: self._read(record_key(v), VersionRecord.decode),
                              [i for i in ids if is_version_id(i)]):
            if rec is None:
                continue
            if rec.id != vid:
                self.problem(record_key(vid), f"the record names another version ({rec.id})")
                continue
            self.records[vid] = rec
        stats = self.report.stats
        stats.states, stats.records = len(self.states), len(self.records)
        for st in self.states.values():
            stats.by_state[st.state] = stats.by_state.get(st.state, 0) + 1

    def check_versions(self) -> None:
        for vid, st in sorted(self.states.items()):
            rec = self.records.get(vid)
            if st.state in READABLE_STATES and rec is None:
                self.problem(f"state/{vid}", f"the state says {st.state} but {record_key(vid)} is missing")
            if rec is not None and tuple(rec.parents) != tuple(st.parents):
                self.problem(record_key(vid), "the record and the state name different parents")
            for p in st.parents:
                parent = self.states.get(p)
                if parent is None:  # `delete --force` of a parent: the child keeps its own full tree
                    self.report.notes.append(f"state/{vid}: parent {p} was deleted (delete --force)")
                elif st.state in READABLE_STATES and parent.state not in READABLE_STATES:
                    self.problem(f"state/{vid}", f"parent {p} is {parent.state}, not final")
        for vid in sorted(set(self.records) - set(self.states)):
            self.report.notes.append(f"{record_key(vid)}: a record without a state (an interrupted delete)")
        self._check_cycles()

    def _check_cycles(self) -> None:
        done: set[str] = set()
        for start in sorted(self.states):
            if start in done:
                continue
            # Iterative DFS; `path` is the current chain, `on_path` its members.
            path: list[tuple[str, Iterator[str]]] = [(start, iter(self.states[start].parents))]
            on_path = {start}
            while path:
                node, it = path[-1]
                nxt = next(it, None)
                if nxt is None:
                    path.pop()
                    on_path.discard(node)
                    done.add(node)
                    continue
                if nxt in on_path:
                    chain = [n for n, _ in path]
                    cycle = [*chain[chain.index(nxt):], nxt]
                    self.problem(f"state/{nxt}", "parent cycle: " + " -> ".join(c[:12] for c in cycle))
                    continue
                if nxt in done or nxt not in self.states:
                    continue
                path.append((nxt, iter(self.states[nxt].parents)))
                on_path.add(nxt)

    # -- trees and blocks -------------------------------------------------------------------------

    def _fetch_tree(self, h: bytes) -> Tree | str:
        """The decoded tree, or why it cannot be had."""
        try:
            data = self.store.get(object_key(h))
        except ObjectNotFound:
            return "is missing"
        self.report.stats.bytes_read += len(data)  # approximate under threads; only a statistic
        if digest(data) != h:
            return f"is damaged: its {len(data)} bytes do not hash to its name"
        try:
            return decode_tree(data)
        except FormatError as e:
            return f"cannot be read: {e}"

    def walk(self, roots: dict[bytes, str], blocks: bool) -> None:
        """Fetch every tree under `roots` (hash -> where), level by level; with `blocks`, note
        what their files need of their blocks. Trees seen before are not fetched again."""
        frontier = {h: where for h, where in roots.items() if h not in self.trees_seen}
        while frontier:
            level, frontier = frontier, {}
            self.trees_seen.update(level)
            for h, tree in _pmap(self.pool, self._fetch_tree, level):
                where = level[h]
                if isinstance(tree, str):
                    self.problem(object_key(h), f"tree of {where} {tree}")
                    continue
                if h in roots:
                    self.totals[h] = (tree.nfiles, tree.nbytes)
                for e in tree.entries:
                    sub = f"{where} {e.name}" if where.endswith(":") else f"{where}/{e.name}"
                    if isinstance(e, DirEntry):
                        if e.tree not in self.trees_seen:
                            frontier.setdefault(e.tree, sub)
                    elif blocks and isinstance(e, FileEntry):
                        self._need_blocks(e, sub)
        self.report.stats.trees = len(self.trees_seen)

    def _need_blocks(self, e: FileEntry, where: str) -> None:
        for i, (h, off, length, _) in enumerate(e.spans()):
            need = self.blocks.get(h)
            if need is None:
                need = self.blocks[h] = _Need(f"{where} (block {i})")
            if isinstance(e.blocks[i], bytes):
                need.exact = length
            need.end = max(need.end, off + length)

    def _block_problem(self, h: bytes, info: ObjectInfo | None, data: bytes | None) -> str | None:
        need = self.blocks[h]
        if info is None:
            return "is missing"
        if need.exact is not None and info.size != need.exact:
            return f"is {info.size} bytes, not {need.exact}"
        if info.size < need.end:
            return f"is {info.size} bytes, too short for a range that ends at byte {need.end}"
        if info.sha256 is not None and info.sha256 != h:
            return "is damaged: the store's SHA-256 checksum of it differs from its name"
        if data is not None and digest(data) != h:
            return "is damaged: its bytes do not hash to its name"
        return None

    def check_blocks(self, listing: dict[str, ObjectInfo]) -> None:
        stats = self.report.stats
        stats.blocks = len(self.blocks)

        def one(h: bytes) -> str | None:
            key = object_key(h)
            info = listing.get(key)
            data = None
            if self.read_data and info is not None:
                try:
                    data = self.store.get(key)
                except ObjectNotFound:
                    info = None
                else:
                    info = ObjectInfo(key, len(data), info.mtime, info.sha256)
            return self._block_problem(h, info, data)

        for h, why in _pmap(self.pool, one, sorted(self.blocks)):
            info = listing.get(object_key(h))
            if info is not None:
                stats.block_bytes += info.size
                if self.read_data:
                    stats.bytes_read += info.size
            if why is not None:
                self.problem(object_key(h), f"block of {self.blocks[h].where} {why}")

    # -- the whole store --------------------------------------------------------------------------

    def run(self) -> CheckReport:
        self.load_metadata()
        self.check_versions()
        # Readable versions first, with their blocks; then what needs its trees only: bases (gc
        # keeps their trees, not their blocks) and drafts whose finalize stopped after the record.
        full: dict[bytes, str] = {}
        trees_only: dict[bytes, str] = {}
        for vid, rec in sorted(self.records.items()):
            st = self.states.get(vid)
            if st is None or st.state not in (*READABLE_STATES, "draft"):
                continue  # aborted, failed or deleted: gc may have taken its objects
            root = st.root if st.root is not None and st.state in READABLE_STATES else rec.root  # repacked
            (full if st.state in READABLE_STATES else trees_only).setdefault(root, f"version {vid}:")
            trees_only.setdefault(rec.base, f"the base of version {vid}:")
            for h, size in rec.tree_packs:  # checked as a block of exactly that size (FORMAT.md §4)
                self.blocks.setdefault(h, _Need(f"the tree pack of version {vid}", exact=size))
        self.walk(full, blocks=True)
        self.walk(trees_only, blocks=False)
        for vid, rec in sorted(self.records.items()):
            st = self.states.get(vid)
            totals = self.totals.get(st.root if st is not None and st.root is not None else rec.root)
            if totals is not None and st is not None and st.state in READABLE_STATES \
                    and totals != (rec.files, rec.nbytes):
                self.problem(record_key(vid), f"the record counts {rec.files} files and {rec.nbytes} bytes,"
                                              f" its root tree {totals[0]} and {totals[1]}")
        # Listed last: an object a state read above relies on was written before that state.
        listing = {i.key: i for i in self.store.list("objects/")}
        self.check_blocks(listing)
        self._orphans(listing)
        self.check_attachments()
        self._locks()
        self.report.problems.sort(key=lambda p: p.key)  # stable: one key's problems keep their order
        return self.report

    def _orphans(self, listing: dict[str, ObjectInfo]) -> None:
        stats = self.report.stats
        referenced = {object_key(h) for h in self.trees_seen} | {object_key(h) for h in self.blocks}
        for key, info in sorted(listing.items()):
            stats.objects += 1
            stats.object_bytes += info.size
            h = hash_from_key(key)
            if h is None or object_key(h) != key or key not in referenced:
                self.report.orphans.append(key)
                stats.orphans += 1
                stats.orphan_bytes += info.size

    def check_attachments(self) -> None:
        """Every metadata index (FORMAT.md §14) decodes, names its version, and each attachment's blob
        exists with its size (with read_data: its bytes hash to its name). Blobs no index names are
        notes (an attachment replaced or removed; gc does not collect them)."""
        blobs = {i.key: i for i in self.store.list(BLOB_PREFIX)}
        used: set[str] = set()
        for info in self.store.list(INDEX_PREFIX):
            vid = info.key.removeprefix(INDEX_PREFIX)
            idx = self._read(info.key, lambda d: MetadataIndex.decode(d, None))
            if idx is None:
                continue
            if idx.id != vid:
                self.problem(info.key, f"the index names another version ({idx.id})")
                continue
            if vid not in self.states:
                self.report.notes.append(f"{info.key}: the metadata of a deleted version")
            for att in idx.attachments.values():
                key = blob_key(att.sha256)
                used.add(key)
                blob = blobs.get(key)
                why = None if blob is not None else "is missing"
                if blob is not None and blob.size != att.size:
                    why = f"is {blob.size} bytes, not {att.size}"
                elif blob is not None and self.read_data:
                    try:
                        if digest(self.store.get(key)) != att.sha256:
                            why = "is damaged: its bytes do not hash to its name"
                    except ObjectNotFound:
                        why = "is missing"
                if why is not None:
                    self.problem(key, f"attachment {att.name!r} of version {vid} {why}")
        for key in sorted(set(blobs) - used):
            self.report.notes.append(f"{key}: an attachment blob no version names")

    def _locks(self) -> None:
        now = time.time()
        for info in self.store.list("locks/"):
            self.report.stats.locks += 1
            if now - info.mtime >= STALE_AFTER:
                self.report.stale_locks.append(info.key)
                self.report.stats.stale_locks += 1
        self.report.stale_locks.sort()


def check_store(store: ObjectStore, *, read_data: bool = False, workers: int = 16) -> CheckReport:
    """Check every invariant of the store (see the module docstring); never raises for bad objects."""
    checker = _Checker(store, read_data, workers)
    try:
        return checker.run()
    finally:
        checker.pool.shutdown()
