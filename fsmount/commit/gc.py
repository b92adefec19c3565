"""Garbage collection: delete the objects no version reaches, under the gc lock."""

from __future__ import annotations

import math
import time

from fsmount.cache.fetcher import ObjectReader
from fsmount.commit import registry
from fsmount.commit.drafts import stale_drafts
from fsmount.commit.locks import STALE_AFTER, Lock, gc_lock
from fsmount.errors import UsageError
from fsmount.format.hashing import hash_from_key
from fsmount.format.objects import DirEntry, FileEntry
from fsmount.format.records import READABLE_STATES
from fsmount.store.base import ObjectInfo, ObjectStore

DELETE_BATCH = 256  # objects deleted between two checks that the gc lock is still held


def gc(
    store: ObjectStore, reader: ObjectReader, grace: float = 3600.0, dry_run: bool = False
) -> dict[str, int]:
    """Delete objects no version reaches. Holds the gc lock, so no upload or commit runs meanwhile.

    Unreferenced objects younger than `grace` seconds, or than the oldest live draft minus
    `grace`, are kept. A stale draft (no writer for STALE_AFTER, see drafts.stale_drafts) does
    not hold the cutoff back: `close` uploads again whatever of it gc took.
    """
    check_grace(grace)
    with gc_lock(store) as lock:
        states = registry.list_states(store, strict=True)  # never skip a state: its blocks would go
        stale = stale_drafts(store, states)
        drafts = [s.created for s in states if s.state == "draft" and s.id not in stale]
        keep = reachable(reader, [s.id for s in states if s.state in READABLE_STATES])
        _drop_stale_locks(store)
        cutoff = time.time() - grace
        if drafts:
            cutoff = min(cutoff, min(drafts) - grace)  # an open draft may reference newer objects
        doomed: list[ObjectInfo] = []
        kept_young = 0
        for info in store.list("objects/"):
            h = hash_from_key(info.key)
            if h is None or h in keep:
                continue
            if info.mtime >= cutoff:
                kept_young += 1
                continue
            doomed.append(info)
        if not dry_run:
            _delete(store, lock, doomed)
    return {
        "deleted": len(doomed),
        "bytes_freed": sum(i.size for i in doomed),
        "kept_recent": kept_young,
        "reachable": len(keep),
        "stale_drafts": len(stale),
    }


def check_grace(grace: float) -> None:
    """A grace period is a finite number of seconds, 0 or more (a negative or NaN one deletes new blocks)."""
    if not isinstance(grace, (int, float)) or not math.isfinite(grace) or grace < 0:
        raise UsageError(f"invalid grace period {grace!r}: it must be a finite duration of 0 s or more")


def _delete(store: ObjectStore, lock: Lock, doomed: list[ObjectInfo]) -> None:
    """Delete in batches; before each, check the gc lock is still held (in the store, too)."""
    for start in range(0, len(doomed), DELETE_BATCH):
        lock.check(verify=True)
        for info in doomed[start : start + DELETE_BATCH]:
            store.delete(info.key)


def reachable(reader: ObjectReader, version_ids: list[str]) -> set[bytes]:
    """Every object the given final versions need.

    Roots keep trees and blocks; bases (kept for listing changes) keep trees only, so a
    deleted parent's data can go while its children still show their diffs.
    """
    records = [reader.record(v) for v in version_ids]
    keep: set[bytes] = set()
    full: set[bytes] = set()
    for rec in records:
        _reach(reader, rec.root, full, keep, with_blocks=True)
    trees_only: set[bytes] = set(full)
    for rec in records:
        _reach(reader, rec.base, trees_only, keep, with_blocks=False)
    return keep


def _reach(reader: ObjectReader, tree: bytes, seen: set[bytes], keep: set[bytes], with_blocks: bool) -> None:
    """Add `tree`, its subtrees and (optionally) their blocks to `keep`; shared subtrees once.

    An explicit stack, not recursion: a tree may be nested thousands of levels deep.
    """
    stack = [tree]
    while stack:
        h = stack.pop()
        if h in seen:
            continue
        seen.add(h)
        keep.add(h)
        for e in reader.tree(h).entries:
            if isinstance(e, DirEntry):
                stack.append(e.tree)
            elif with_blocks and isinstance(e, FileEntry):
                keep.update(b if isinstance(b, bytes) else b[0] for b in e.blocks)


def _drop_stale_locks(store: ObjectStore) -> None:
    """Delete locks no process has refreshed for STALE_AFTER seconds (left by a crashed process)."""
    now = time.time()
    for info in store.list("locks/"):
        if now - info.mtime > STALE_AFTER:
            store.delete(info.key)
