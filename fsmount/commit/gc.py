"""Garbage collection: delete the objects no version reaches, under the gc lock."""

from __future__ import annotations

import math
import time

from fsmount import config
from fsmount.cache.fetcher import ObjectReader
from fsmount.commit import attachments, registry
from fsmount.commit.drafts import stale_drafts
from fsmount.commit.locks import STALE_AFTER, Lock, gc_lock
from fsmount.commit.repack import repack as repack_packs
from fsmount.errors import UsageError
from fsmount.format.hashing import hash_from_key
from fsmount.format.names import is_version_id
from fsmount.format.objects import DirEntry, FileEntry
from fsmount.format.records import READABLE_STATES, VersionState
from fsmount.store.base import ObjectInfo, ObjectStore

DELETE_BATCH = 256  # objects deleted between two checks that the gc lock is still held


def gc(
    store: ObjectStore, reader: ObjectReader, grace: float = 3600.0, dry_run: bool = False,
    repack: bool = False, repack_below: float = 0.5, pack_size: int | None = None,
) -> dict[str, int]:
    """Delete objects no version reaches. Holds the gc lock, so no upload or commit runs meanwhile.

    Unreferenced objects younger than `grace` seconds, or than the oldest live draft minus
    `grace`, are kept. A stale draft (no writer for STALE_AFTER, see drafts.stale_drafts) does
    not hold the cutoff back: `close` uploads again whatever of it gc took. A pack stays while any
    version uses any range of it; with `repack`, packs of which less than `repack_below` of the
    bytes are used are first rewritten (commit/repack.py), so that they can go.
    """
    check_grace(grace)
    if not 0 < repack_below <= 1:
        raise UsageError(f"invalid repack threshold {repack_below!r}: a fraction above 0 and at most 1")
    with gc_lock(store) as lock:
        states = registry.list_states(store, strict=True)  # never skip a state: its blocks would go
        repacked = None
        if repack:
            repacked = repack_packs(store, reader, lock, states, below=repack_below,
                                    target=pack_size or config.pack_size(), dry_run=dry_run)
            if repacked.versions_repointed:
                states = registry.list_states(store, strict=True)
        stale = stale_drafts(store, states)
        drafts = [s.created for s in states if s.state == "draft" and s.id not in stale]
        keep = reachable(reader, [s for s in states if s.state in READABLE_STATES], grace)
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
        unused, young = _unused_attachments(store, states, cutoff)
        kept_young += young
        doomed += unused
        if not dry_run:
            _delete(store, lock, doomed)
    result = {
        "deleted": len(doomed),
        "bytes_freed": sum(i.size for i in doomed),
        "kept_recent": kept_young,
        "reachable": len(keep),
        "stale_drafts": len(stale),
    }
    if repacked is not None:
        result.update(packs_repacked=repacked.packs_sparse, packs_written=repacked.packs_written,
                      bytes_copied=repacked.bytes_copied, versions_repointed=repacked.versions_repointed)
    return result


def _unused_attachments(
    store: ObjectStore, states: list[VersionState], cutoff: float
) -> tuple[list[ObjectInfo], int]:
    """Metadata blobs no version's index names, and indexes of versions that are gone (a delete
    stopped between the state and the index), older than `cutoff`; and how many were too young."""
    ids = {s.id for s in states}
    used: set[bytes] = set()
    doomed: list[ObjectInfo] = []
    young = 0
    for info in store.list(attachments.INDEX_PREFIX):
        vid = info.key.removeprefix(attachments.INDEX_PREFIX)
        if vid in ids:  # a damaged index raises: gc stops rather than free the blobs it names
            used.update(a.sha256 for a in attachments.read_index(store, vid).attachments.values())
        elif is_version_id(vid) and info.mtime < cutoff:  # other keys are not ours to delete
            doomed.append(info)
    for info in store.list(attachments.BLOB_PREFIX):
        h = attachments.hash_from_blob_key(info.key)
        if h is None or h in used:
            continue
        if info.mtime >= cutoff:
            young += 1
        else:
            doomed.append(info)
    return doomed, young


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


def reachable(reader: ObjectReader, states: list[VersionState], grace: float = 0.0) -> set[bytes]:
    """Every object the given final versions need (a pack: while any range of it is used).

    Roots keep trees and blocks; bases (kept for listing changes) keep trees only, so a
    deleted parent's data can go while its children still show their diffs. After a repack, a
    version is read from its state's root; the root it replaced keeps its trees and blocks for
    `grace` seconds (mounts opened before the repack still read them), then goes.
    """
    records = [registry.readable_record(reader, s) for s in states]
    keep: set[bytes] = set()
    full: set[bytes] = set()
    now = time.time()
    for rec in records:
        _reach(reader, rec.root, full, keep, with_blocks=True)
        keep.update(h for h, _ in rec.tree_packs)  # its trees again, in one object (FORMAT.md §4)
    for s in states:
        if s.replaced is not None and s.repacked is not None and now - s.repacked < grace:
            _reach(reader, s.replaced, full, keep, with_blocks=True)
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
