"""gc --repack: copy the live ranges of mostly unreferenced packs into new packs, and point the versions
that used them at rewritten trees (a conditional update of each version's state; records never change).

docs/FORMAT.md §10, "Repacking", gives the rules. Runs under the gc lock, so no writer runs meanwhile.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace

from fsmount.cache.fetcher import ObjectReader
from fsmount.commit import registry
from fsmount.commit.locks import Lock
from fsmount.commit.packer import PackBuilder
from fsmount.errors import StateError
from fsmount.format.hashing import digest, object_key
from fsmount.format.objects import BlockRef, DirEntry, Entry, FileEntry, tree_object
from fsmount.format.packs import merge_ranges
from fsmount.format.records import READABLE_STATES, VersionState
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

Range = tuple[bytes, int, int]  # (pack, offset, length): one ranged locator


@dataclass
class RepackStats:
    packs_sparse: int = 0  # packs below the threshold, rewritten
    packs_written: int = 0
    bytes_copied: int = 0
    versions_repointed: int = 0


def distinct_trees(reader: ObjectReader, roots: Iterable[bytes]) -> list[bytes]:
    """Every tree under `roots`, each once, parents before children (iterative: trees nest deep)."""
    seen: set[bytes] = set()
    order: list[bytes] = []
    stack = list(roots)
    while stack:
        h = stack.pop()
        if h in seen:
            continue
        seen.add(h)
        order.append(h)
        stack.extend(e.tree for e in reader.tree(h).entries if isinstance(e, DirEntry))
    return order


def pack_usage(reader: ObjectReader, roots: Iterable[bytes]) -> dict[bytes, list[tuple[int, int]]]:
    """Objects named by ranged locators under `roots`: the (offset, length) ranges used, merged."""
    raw: dict[bytes, list[tuple[int, int]]] = {}
    for h in distinct_trees(reader, roots):
        for e in reader.tree(h).entries:
            if isinstance(e, FileEntry):
                for b in e.blocks:
                    if not isinstance(b, bytes):
                        raw.setdefault(b[0], []).append((b[1], b[2]))
    return {h: merge_ranges(r) for h, r in raw.items()}


def sparse_packs(store: ObjectStore, usage: dict[bytes, list[tuple[int, int]]], below: float) -> set[bytes]:
    """Packs of which less than `below` (a fraction) of the bytes are used by any version."""
    out = set()
    for h, ranges in usage.items():
        info = store.head(object_key(h))
        if info is not None and info.size and sum(n for _, n in ranges) < below * info.size:
            out.add(h)
    return out


def repack(
    store: ObjectStore, reader: ObjectReader, lock: Lock, states: list[VersionState], *, below: float,
    target: int, dry_run: bool = False,
) -> RepackStats:
    """Rewrite the sparse packs the readable `states` use; repoint those versions. The caller holds `lock`."""
    stats = RepackStats()
    live = [s for s in states if s.state in READABLE_STATES]
    roots = {s.id: registry.readable_record(reader, s).root for s in live}
    sparse = sparse_packs(store, pack_usage(reader, roots.values()), below)
    stats.packs_sparse = len(sparse)
    if not sparse or dry_run:
        return stats
    moved = _copy_live_ranges(store, reader, lock, roots.values(), sparse, target, stats)
    memo: dict[bytes, bytes] = {}
    new_trees: dict[bytes, bytes] = {}
    for root in roots.values():
        _rewrite(reader, root, sparse, moved, memo, new_trees)
    for h, data in new_trees.items():
        lock.check()
        store.put(object_key(h), data)
        reader.cache.put(h, data)
    store.barrier()
    now = time.time()
    for st in live:
        old, new = roots[st.id], memo[roots[st.id]]
        if new == old:
            continue
        lock.check(verify=True)
        registry.update_state(store, st.id, _repoint(old, new, now))
        stats.versions_repointed += 1
    log.info("repacked %d packs into %d; %d versions point at rewritten trees",
             stats.packs_sparse, stats.packs_written, stats.versions_repointed)
    return stats


def _repoint(old: bytes, new: bytes, now: float) -> Callable[[VersionState], None]:
    """The state change: `root` (read from) becomes `new`; `old` stays reachable for the grace period."""
    def change(st: VersionState) -> None:
        if st.state not in READABLE_STATES or (st.root is not None and st.root != old):
            raise StateError(f"version {st.id} changed during the repack")
        st.replaced, st.root, st.repacked = old, new, now
    return change


def _copy_live_ranges(
    store: ObjectStore, reader: ObjectReader, lock: Lock, roots: Iterable[bytes], sparse: set[bytes],
    target: int, stats: RepackStats,
) -> dict[Range, BlockRef]:
    """New packs holding every range of a sparse pack a version uses, in tree order; old -> new locator."""
    ranges: list[Range] = []
    seen: set[Range] = set()
    for h in distinct_trees(reader, roots):
        for e in reader.tree(h).entries:
            if isinstance(e, FileEntry):
                for b in e.blocks:
                    if not isinstance(b, bytes) and b[0] in sparse and b not in seen:
                        seen.add(b)
                        ranges.append(b)
    data_of: dict[Range, bytes] = {}
    for pack in sparse:  # one whole (verified) pack at a time; only its live ranges are kept
        data = reader.read(pack)
        for r in ranges:
            if r[0] == pack:
                reader.check_span(pack, len(data), r[1], r[2], whole=False)
                data_of[r] = data[r[1]:r[1] + r[2]]
    moved: dict[Range, BlockRef] = {}
    builder, members = PackBuilder(), list[tuple[Range, bytes]]()

    def seal() -> None:
        nonlocal builder, members
        h, data, refs = builder.seal(block_size=0)  # always ranged: entries keep their own block sizes
        lock.check()
        store.put(object_key(h), data)
        stats.packs_written += 1
        stats.bytes_copied += len(data)
        for r, sha in members:
            moved[r] = refs[sha]
        builder, members = PackBuilder(), []

    for r in ranges:
        chunk = data_of.pop(r)
        sha = digest(chunk)
        if builder.size and sha not in builder.offsets and builder.size + len(chunk) > target:
            seal()
        builder.add(sha, chunk)
        members.append((r, sha))
    if members:
        seal()
    store.barrier()
    return moved


def _rewrite(reader: ObjectReader, root: bytes, sparse: set[bytes], moved: dict[Range, BlockRef],
             memo: dict[bytes, bytes], out: dict[bytes, bytes]) -> None:
    """memo[tree] = the tree with every locator into a sparse pack moved (itself if none); new trees to `out`.
    Post-order with an explicit stack: children are rewritten before the directory naming them."""
    stack: list[tuple[bytes, bool]] = [(root, False)]
    while stack:
        h, ready = stack.pop()
        if h in memo:
            continue
        tree = reader.tree(h)
        if not ready:
            stack.append((h, True))
            stack.extend((e.tree, False) for e in tree.entries
                         if isinstance(e, DirEntry) and e.tree not in memo)
            continue
        entries: list[Entry] = []
        changed = False
        for e in tree.entries:
            if isinstance(e, DirEntry) and memo[e.tree] != e.tree:
                e = replace(e, tree=memo[e.tree])
                changed = True
            elif isinstance(e, FileEntry) and any(not isinstance(b, bytes) and b[0] in sparse
                                                  for b in e.blocks):
                e = replace(e, blocks=tuple(b if isinstance(b, bytes) or b[0] not in sparse else moved[b]
                                            for b in e.blocks))
                changed = True
            entries.append(e)
        if changed:
            nh, data = tree_object(entries)
            out[nh] = data
            memo[h] = nh
        else:
            memo[h] = h
