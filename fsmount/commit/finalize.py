"""Turn a change-set into a final version: merged parents, trees along changed paths, record, state.

The write order is what makes a crash safe: blocks (already uploaded by the caller),
then trees, then the immutable record, then the state flip to final. Each step is
idempotent, so running it again after a crash completes the version.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from fsmount.cache.fetcher import ObjectReader
from fsmount.commit.drafts import author
from fsmount.commit.locks import Lock
from fsmount.commit.registry import content_root, read_state, update_state
from fsmount.errors import FormatError, ObjectNotFound, StateError
from fsmount.format import tree_packs
from fsmount.format.hashing import digest, object_key, record_key
from fsmount.format.objects import (
    EMPTY_TREE_BYTES,
    EMPTY_TREE_HASH,
    DirEntry,
    FileEntry,
    LinkEntry,
    SymlinkEntry,
)
from fsmount.format.records import READABLE_STATES, VersionRecord, VersionState
from fsmount.format.tree_edit import DirNode, TreeEditor, TreeWriter, split_path
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)


@dataclass
class ChangeSet:
    """What a new version changes relative to its merged parents."""

    removes: list[str] = field(default_factory=list)  # paths or globs
    puts: dict[str, FileEntry | SymlinkEntry | LinkEntry] = field(default_factory=dict)
    mkdirs: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (mode, mtime_ns)
    # Used by the overlay commit (empty for sync): stored subtrees placed at a path (renamed or
    # re-made directories), exact paths to remove (no glob), modes and mtimes of directories.
    grafts: dict[str, DirEntry] = field(default_factory=dict)
    deletes: list[str] = field(default_factory=list)
    dir_attrs: dict[str, tuple[int, int]] = field(default_factory=dict)  # path -> (mode, mtime_ns)

    def __bool__(self) -> bool:
        return bool(self.removes or self.puts or self.mkdirs or self.grafts or self.deletes
                    or self.dir_attrs)


class TreeUploader:
    """Collects new tree objects and stores them in parallel (and in the local cache)."""

    def __init__(self, store: ObjectStore, reader: ObjectReader) -> None:
        self.store = store
        self.reader = reader
        self.pending: dict[bytes, bytes] = {}
        self.written: dict[bytes, bytes] = {}  # every tree of this version, for its tree pack

    def __call__(self, h: bytes, data: bytes) -> None:
        self.pending[h] = data
        self.written[h] = data

    def tree_pack(self) -> tuple[tuple[bytes, int], ...]:
        """Store the trees written so far once more as one tree pack (format/tree_packs.py), when
        there are enough of them and not too many bytes; its (hash, size) for the record, or ()."""
        trees = {h: t for h, t in self.written.items() if h != EMPTY_TREE_HASH}
        if not tree_packs.wanted(trees):
            return ()
        data = tree_packs.encode_tree_pack(trees.values())
        h = digest(data)
        self.store.put(object_key(h), data)
        return ((h, len(data)),)

    def flush(self, workers: int = 16) -> int:
        items = list(self.pending.items())
        self.pending.clear()

        def put(item: tuple[bytes, bytes]) -> None:
            h, data = item
            self.store.put(object_key(h), data)
            self.reader.cache.put(h, data)

        with ThreadPoolExecutor(max(1, min(workers, len(items)))) as pool:
            list(pool.map(put, items))
        return len(items)


def merged_base(reader: ObjectReader, parents: Iterable[str], trees: TreeWriter) -> bytes:
    """The root tree of the parents merged in order, later winning; new trees go to `trees`."""
    roots = [content_root(reader, p) for p in parents]
    if not roots:
        return EMPTY_TREE_HASH
    if len(roots) == 1:
        return roots[0]
    editor = TreeEditor(reader.tree, roots[0])
    for r in roots[1:]:
        editor.overlay(r)
    h, _ = editor.write(trees)
    return h


def apply_changes(reader: ObjectReader, base: bytes, changes: ChangeSet) -> TreeEditor:
    """An editor over `base` with the change-set applied; unchanged files keep their entries."""
    editor = TreeEditor(reader.tree, base)
    # Grafts first, parents before children: a whiteout or put below a graft then edits it.
    for path in sorted(changes.grafts, key=lambda p: len(split_path(p))):
        editor.graft(path, changes.grafts[path])
    for pattern in changes.removes:
        editor.remove_matching(pattern)
    for path in changes.deletes:
        editor.remove(path)
    for path, (mode, mtime) in changes.mkdirs.items():
        editor.mkdir(path, mode, mtime)
    for path, (mode, mtime) in changes.dir_attrs.items():
        editor.set_dir_attrs(path, mode, mtime)
    for path, entry in changes.puts.items():
        old = editor.get(path)
        if old is not None and not isinstance(old, DirNode) and entry.same_content(old):
            continue  # same bytes as inherited: keep the older entry and its origin
        editor.put(path, entry)
    return editor


def finalize(
    store: ObjectStore,
    reader: ObjectReader,
    state: VersionState,
    changes: ChangeSet,
    *,
    block_size: int,
    message: str = "",
    publish: bool = False,
    lock: Lock | None = None,
) -> VersionRecord:
    """Write trees, the record and the final state of a draft whose blocks are uploaded.

    With the writer `lock`, checks (in the store) that it is still held before the record and
    before the state flip: a writer that lost it may have lost blocks to a gc, so it stops.
    """
    if state.state in READABLE_STATES:
        raise StateError(f"dataset version {state.id} is already {state.state}")
    if state.state != "draft":
        raise StateError(f"dataset version {state.id} is {state.state} and cannot be finalized")
    for p in state.parents:
        if read_state(store, p).state not in READABLE_STATES:
            raise StateError(f"parent {p} is not final")
    trees = TreeUploader(store, reader)
    base = merged_base(reader, state.parents, trees)
    trees.flush()  # the merged parents' new trees: the editor below reads them back through the reader
    editor = apply_changes(reader, base, changes)
    root, stats = editor.write(trees)
    # The editor writes only the directories it changed, yet the record (root, base) or an inherited
    # empty directory may name the empty tree, which readers know without fetching, so a store can
    # lack it. Write it always (write-once, cheap): every tree a record reaches is then in the store.
    trees(EMPTY_TREE_HASH, EMPTY_TREE_BYTES)
    trees.flush()
    packs = trees.tree_pack()  # after the trees themselves: a reader never needs the pack
    store.barrier()
    if lock is not None:
        lock.check(verify=True)
    record = _write_record(store, state, root, base, stats.files, stats.bytes, block_size, message, packs)
    store.barrier()

    def flip(st: VersionState) -> None:
        if st.state != "draft":
            raise StateError(f"dataset version {st.id} is already {st.state}")
        st.state = "published" if publish else "final"

    if lock is not None:
        lock.check(verify=True)
    update_state(store, state.id, flip)
    return record


def _write_record(
    store: ObjectStore, state: VersionState, root: bytes, base: bytes, files: int, nbytes: int,
    block_size: int, message: str, packs: tuple[tuple[bytes, int], ...] = (),
) -> VersionRecord:
    """Write the version's record, or reuse the one an interrupted finalize already wrote.

    A record is only authoritative once the state says final; while the state is still draft,
    a record whose tree differs (files were staged after the crash) is replaced.
    """
    try:
        existing: VersionRecord | None = VersionRecord.decode(store.get(record_key(state.id)))
    except ObjectNotFound:
        existing = None
    except FormatError:  # a torn record of a draft (an interrupted PUT): not authoritative, rewrite it
        log.warning("the record of draft %s is damaged; writing it again", state.id)
        store.delete(record_key(state.id))
        existing = None
    if existing is not None:
        if (existing.root, existing.base, existing.message) == (root, base, message):
            log.info("version %s already has its record (an earlier finalize was interrupted)", state.id)
            return existing
        log.info("replacing the record of draft %s: it changed since an interrupted finalize", state.id)
        store.delete(record_key(state.id))
    record = VersionRecord(
        id=state.id, project=state.project, name=state.name, version=state.version,
        parents=state.parents, root=root, base=base, created=state.created, finalized=time.time(),
        author=state.author or author(), message=message, files=files, nbytes=nbytes,
        block_size=block_size, tree_packs=packs,
    )
    if not store.put(record_key(state.id), record.encode()):
        record = VersionRecord.decode(store.get(record_key(state.id)))
    return record
