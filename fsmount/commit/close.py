"""Upload a draft's staged files (resumably) and close it: its journal becomes the ChangeSet to finalize."""

from __future__ import annotations

import contextlib
import json
import logging
import os
import stat
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsmount.cache.fetcher import ObjectReader
from fsmount.commit import packer, staging
from fsmount.commit.drafts import touch
from fsmount.commit.finalize import ChangeSet, finalize, merged_base
from fsmount.commit.locks import Lock, writer_lock
from fsmount.commit.packer import Packing, Reuse, content_index
from fsmount.commit.staging import Staged, StagingJournal, entry_to_json, source_stamp
from fsmount.commit.uploader import SourceFile, Uploader, UploadStats, source_file
from fsmount.errors import UsageError
from fsmount.format.hashing import object_key
from fsmount.format.objects import SymlinkEntry, link_entry_from_json
from fsmount.format.records import VersionRecord, VersionState
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@contextlib.contextmanager
def writing(store: ObjectStore, draft_id: str) -> Iterator[Lock]:
    """The writer lock for `draft_id`, naming it; at the end the draft's state is touched (if it is
    still a draft), so the draft counts as live while the lock is fresh and for STALE_AFTER after."""
    with writer_lock(store, draft=draft_id) as lock:
        try:
            yield lock
        finally:
            touch(store, draft_id)


def upload_staged(
    store: ObjectStore,
    journal: StagingJournal,
    origin: str,
    block_size: int,
    progress: Progress | None,
    *,
    lock: Lock | None = None,
    suspect: set[bytes] | None = None,
    pack: Packing | None = None,
    reuse: Callable[[], Reuse] | None = None,
) -> UploadStats:
    """Upload the staged files not yet uploaded (or changed since); the caller holds the writer `lock`.

    Each file's entry is journalled once its blocks (or the pack holding it) are stored, so a killed
    upload resumes; a file journalled as uploaded is never packed again, one not journalled is.
    Blocks in `suspect` (found damaged by a verify) are written again even if the store has them.
    `pack` says which files are packed; `reuse`, called only if there is a file to pack, gives the
    contents the parents already store (their locators are reused: no pack holds them twice).
    """
    staged = journal.replay()
    todo: list[SourceFile] = []
    for dest, (kind, src) in staged.adds.items():
        if kind != "file":
            continue
        try:
            stamp = source_stamp(src)
        except FileNotFoundError:
            raise UsageError(f"{src} (staged as {dest}) no longer exists") from None
        done = staged.uploaded.get(dest)
        if done and done[0] == stamp:
            continue
        todo.append(source_file(dest, src))
    if pack is None:
        pack = packing_of(journal)
    known = reuse() if reuse is not None and any(pack.packs(f.size) for f in todo) else None
    uploader = Uploader(store, origin, block_size=block_size, progress=progress, lock=lock, suspect=suspect,
                        pack=pack, reuse=known)
    batch: list[dict[str, Any]] = []
    last = time.monotonic()
    for f, entry in uploader.upload(todo):
        batch.append(
            {
                "op": "uploaded",
                "path": f.dest,
                "stamp": source_stamp(f.src),
                "entry": entry_to_json(entry),
                "session": staging.SESSION,
            }
        )
        if len(batch) >= 512 or time.monotonic() - last > 1.0:
            journal.append(batch)
            batch, last = [], time.monotonic()
    journal.append(batch)
    return uploader.stats


def packing_of(journal: StagingJournal, threshold: str | int | None = None,
               size: str | int | None = None) -> Packing:
    """A draft's packing: what is given, else what its draft.json says, else the configuration."""
    return packer.packing(threshold, size, journal.meta())


def parents_content(reader: ObjectReader, parents: tuple[str, ...] | list[str], threshold: int,
                    suspect: set[bytes] | None = None) -> Callable[[], Reuse]:
    """The small-file contents of the merged parents, as `upload_staged`'s `reuse` (built when called)."""
    built: list[Reuse] = []

    def build() -> Reuse:
        if not built:
            base = merged_base(reader, parents, reader.cache.put)  # a merged tree goes to the cache only
            built.append(content_index(reader.tree, [base], threshold, frozenset(suspect or ())))
        return built[0]
    return build


def staged_bytes(staged: Staged) -> int:
    """Bytes of the staged files still on disk (what an upload reads at most)."""
    total = 0
    for kind, src in staged.adds.values():
        if kind == "file":
            try:
                total += os.stat(src).st_size
            except OSError:
                pass
    return total


def staged_summary(staged: Staged) -> dict[str, Any]:
    """What a draft has staged so far, as `info` shows it."""
    return {
        "staged_files": len(staged.adds),
        "staged_removals": staged.removes,
        "uploaded_files": len(staged.uploaded),
    }


def lost_uploads(store: ObjectStore, staged: Staged) -> list[str]:
    """Files uploaded by an earlier process whose blocks are no longer in the store.

    gc never runs while this process holds the writer lock, but it may have run between
    an earlier `upload` and this `close`; only those earlier uploads need checking.
    """
    # staging.SESSION is read here, not imported: it names this process, and a test plays another one.
    earlier = [(dest, e) for dest, (_, e, session) in staged.uploaded.items() if session != staging.SESSION]
    # Each object with the length its locators need: a bare block exactly its span, a ranged
    # locator's object at least up to the span's end. A partial object (an interrupted PUT) is no block.
    needed: dict[tuple[bytes, bool], int] = {}
    for _, e in earlier:
        for ref, (h, off, length, _) in zip(e.blocks, e.spans(), strict=True):
            bare = isinstance(ref, bytes)
            needed[(h, bare)] = max(needed.get((h, bare), 0), length if bare else off + length)
    if not needed:
        return []

    def present(item: tuple[tuple[bytes, bool], int]) -> bool:
        (h, bare), size = item
        if bare:
            return store.holds(object_key(h), size)
        info = store.head(object_key(h))
        return info is not None and info.size >= size

    with ThreadPoolExecutor(32) as pool:
        ok = dict(zip(needed, pool.map(present, needed.items()), strict=True))
    bad = {h for (h, _), good in ok.items() if not good}
    return [dest for dest, e in earlier
            if any((b if isinstance(b, bytes) else b[0]) in bad for b in e.blocks)]


def changeset(staged: Staged, origin: str) -> ChangeSet:
    """The replayed journal as a ChangeSet; every staged file must have been uploaded."""
    changes = ChangeSet(removes=list(staged.removes), deletes=list(staged.deletes))
    for dest, (kind, src) in staged.adds.items():
        if kind == "file":
            changes.puts[dest] = staged.uploaded[dest][1]
        elif kind == "link":  # an external file: `src` is its link entry as JSON (api/external.py)
            changes.puts[dest] = link_entry_from_json(dest.rsplit("/", 1)[-1], json.loads(src), origin)
        elif kind == "symlink":
            st = os.lstat(src)
            changes.puts[dest] = SymlinkEntry(
                dest.rsplit("/", 1)[-1], 0o777, st.st_mtime_ns, os.readlink(src), origin
            )
        else:  # a source directory: its mode and mtime as they are, whether it is new or not
            st = os.stat(src)
            changes.dir_attrs[dest] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns)
    return changes


def close_draft(
    store: ObjectStore,
    reader: ObjectReader,
    state: VersionState,
    journal: StagingJournal,
    *,
    block_size: int,
    message: str = "",
    publish: bool = False,
    progress: Progress | None = None,
    suspect: set[bytes] | None = None,
    pack: Packing | None = None,
) -> VersionRecord:
    """Upload what remains (again, for files whose blocks gc took meanwhile) and finalize the draft.

    Small files are packed (`pack`, default the draft's packing); contents the parents store are
    reused, not packed again."""
    if pack is None:
        pack = packing_of(journal)
    reuse = parents_content(reader, state.parents, pack.threshold, suspect)
    with writing(store, state.id) as lock:
        upload_staged(store, journal, state.id, block_size, progress, lock=lock, suspect=suspect, pack=pack,
                      reuse=reuse)
        staged = journal.replay()
        lost = lost_uploads(store, staged)
        if lost:
            log.warning("%d files uploaded earlier lost blocks (gc?); uploading them again", len(lost))
            journal.append([{"op": "forget_upload", "path": d} for d in lost])
            upload_staged(store, journal, state.id, block_size, progress, lock=lock, suspect=suspect,
                          pack=pack, reuse=reuse)
            staged = journal.replay()
        return finalize(
            store,
            reader,
            state,
            changeset(staged, state.id),
            block_size=block_size,
            message=message,
            publish=publish,
            lock=lock,
        )
