"""Commit an upper layer as a new child version: rows -> ChangeSet -> the same finalize() sync uses.

Crash safety: the draft id is recorded in the upper db (`committing`) before anything is
uploaded. Running commit again resumes that draft (uploads are idempotent, blocks the store
holds are skipped); if the draft is already final, only the last step remains. The upper
layer is emptied, and its base moved to the new version, only after the version is final.
"""

from __future__ import annotations

import errno
import logging
import os
from collections.abc import Callable
from dataclasses import dataclass, replace

from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.commit.drafts import Drafts
from fsmount.commit.finalize import ChangeSet, finalize
from fsmount.commit.locks import Lock, writer_lock
from fsmount.commit.uploader import SourceFile, Uploader, UploadStats, file_sha256
from fsmount.errors import FsError, FsmountError, NotFoundError, UsageError
from fsmount.format.objects import EMPTY_TREE_HASH, DirEntry, Entry, FileEntry, SymlinkEntry
from fsmount.format.records import READABLE_STATES, VersionRecord, VersionState
from fsmount.format.tree_edit import lookup, split_path, walk_tree
from fsmount.overlay.upper import DIR, FILE, SPECIAL, SYMLINK, WHITEOUT, Row, UpperLayer

log = logging.getLogger(__name__)


@dataclass
class CommitResult:
    """What a commit made: the new record (None when there was nothing to commit)."""

    record: VersionRecord | None
    stats: UploadStats
    resumed: bool = False


@dataclass
class Pending:
    """Pending changes of an overlay, by path (what `fsmount diff MOUNTPOINT` lists)."""

    added: list[str]
    modified: list[str]
    removed: list[str]

    @property
    def count(self) -> int:
        return len(self.added) + len(self.modified) + len(self.removed)


def _depth_sorted(upper: UpperLayer) -> list[str]:
    return sorted((p for p in upper.rows if p), key=lambda p: (len(split_path(p)), p))


def build_changeset(upper: UpperLayer, ws: Workspace, origin: str, block_size: int,
                    progress: Callable[[int], None] | None = None,
                    lock: Lock | None = None) -> tuple[ChangeSet, UploadStats]:
    """Upload the upper layer's data files and describe every row as a change."""
    reader = ws.reader
    cs = ChangeSet()
    files: list[SourceFile] = []
    refuse_specials(upper)
    links: dict[str, tuple[bytes, int]] = {}  # path -> (hard-link group, its link count)
    for path in _depth_sorted(upper):
        row = upper.rows[path]
        name = path.rsplit("/", 1)[-1]
        if row.link is not None:
            group = upper.links[row.link]
            links[path] = (bytes.fromhex(row.link), group.nlink)
            row = group.moved(path)
        if row.kind == WHITEOUT:
            cs.deletes.append(path)
        elif row.kind == DIR:
            if row.opaque or row.redirect:
                tree = reader.tree(row.redirect) if row.redirect else None
                cs.grafts[path] = DirEntry(
                    name, row.mode, row.mtime_ns, row.redirect or EMPTY_TREE_HASH, tree.nfiles if tree else 0,
                    tree.nbytes if tree else 0)
            cs.dir_attrs[path] = (row.mode, row.mtime_ns)
        elif row.kind == SYMLINK:
            assert row.target is not None
            cs.puts[path] = SymlinkEntry(name, 0o777, row.mtime_ns, row.target, origin)
        elif row.kind == FILE and row.data is not None:
            st = os.stat(upper.data_path(row.data))
            files.append(SourceFile(path, upper.data_path(row.data), st.st_size, row.mode, st.st_mtime_ns))
        elif row.kind == FILE and row.lower is not None:
            cs.puts[path] = replace(row.lower, name=name, mode=row.mode, mtime_ns=row.mtime_ns, origin=origin)
    uploader = Uploader(ws.store, origin, block_size=block_size, progress=progress, lock=lock)
    for f, entry in uploader.upload(files):
        cs.puts[f.dest] = entry
    for path, (link, nlink) in links.items():
        e = cs.puts.get(path)
        if isinstance(e, FileEntry):
            cs.puts[path] = replace(e, link=link, nlink=nlink)
    for path, e in cs.puts.items():  # a lower entry of a group no longer linked keeps no stale count
        if isinstance(e, FileEntry) and e.link is not None and path not in links:
            cs.puts[path] = replace(e, link=None, nlink=1)
    return cs, uploader.stats


def refuse_specials(upper: UpperLayer) -> None:
    """Fifos, sockets and device nodes cannot be stored in a version: a commit names them all."""
    paths = sorted(p for p, r in upper.rows.items()
                   if (upper.links[r.link] if r.link is not None else r).kind == SPECIAL)
    if paths:
        shown = ", ".join(paths[:10]) + (f" and {len(paths) - 10} more" if len(paths) > 10 else "")
        raise FsError(errno.EPERM, f"cannot commit {len(paths)} special file(s) (fifo, socket, device):"
                                   f" {shown}; remove them and commit again")


def _new_draft(ws: Workspace, base: VersionState, version: str | None, tags: list[str]) -> VersionState:
    """A draft child of `base`; it stages in the upper layer, so it gets no staging journal."""
    drafts = Drafts(ws.data_home, ws.store_url)
    return drafts.create(ws.store, base.project, base.name, [base.id], version=version, tags=tags)


def finish_interrupted(upper: UpperLayer, ws: Workspace) -> VersionRecord | None:
    """If a commit's draft became final before the overlay was emptied, finish: empty it, move base."""
    draft = upper.committing
    if draft is None:
        return None
    try:
        st = registry.read_state(ws.store, draft)
    except NotFoundError:
        upper.set_meta(committing=None)
        return None
    if st.state in READABLE_STATES:
        rec = ws.reader.record(draft)
        log.info("commit of %s had finished in the store; emptying the overlay", draft)
        upper.reset(draft, rec.root)
        return rec
    if st.state != "draft":
        upper.set_meta(committing=None)  # aborted or failed: a new commit makes a new draft
    return None


def commit_upper(
    upper: UpperLayer, ws: Workspace, *, message: str = "", version: str | None = None,
    tags: list[str] | None = None, publish: bool = False,
    progress: Callable[[int], None] | None = None,
) -> CommitResult:
    """Make the upper layer a final child version of its base, then empty it onto that version."""
    done = finish_interrupted(upper, ws)
    if done is not None:
        return CommitResult(done, UploadStats(), resumed=True)
    if upper.base is None:
        raise UsageError(f"overlay {upper.folder} is not bound to a version")
    if upper.is_empty():
        return CommitResult(None, UploadStats())
    base_state = registry.read_state(ws.store, upper.base)
    block_size = ws.reader.record(upper.base).block_size
    resumed = upper.committing is not None
    if resumed:
        state = registry.read_state(ws.store, upper.committing)  # type: ignore[arg-type]
        log.info("resuming the interrupted commit of draft %s", state.id)
    else:
        state = _new_draft(ws, base_state, version, tags or [])
        upper.set_meta(committing=state.id)
    with writer_lock(ws.store, draft=state.id) as lock:
        changes, stats = build_changeset(upper, ws, state.id, block_size, progress, lock=lock)
        try:
            record = finalize(ws.store, ws.reader, state, changes, block_size=block_size,
                              message=message, publish=publish, lock=lock)
        except FsmountError:
            log.warning("commit of draft %s failed; the overlay is intact and commit can be run again",
                        state.id)
            raise
    upper.reset(record.id, record.root)
    return CommitResult(record, stats, resumed)


def _same_as_lower(upper: UpperLayer, row: Row, old: Entry) -> bool:
    """Whether commit would keep `old` for this row: same bytes and mode, or the same link target.

    A file rewritten with identical bytes is hashed here (only when its size and mode match), so
    that diff says what commit will do: commit keeps the older entry for identical content.
    """
    if row.kind == SYMLINK:
        return isinstance(old, SymlinkEntry) and old.target == row.target
    if not isinstance(old, FileEntry) or row.kind != FILE or row.mode != old.mode:
        return False
    if row.data is None:
        return row.lower is not None and row.lower.same_content(old)
    path = upper.data_path(row.data)
    try:
        if os.stat(path).st_size != old.size:
            return False
        return file_sha256(path) == old.sha256
    except OSError:
        return False


def pending(upper: UpperLayer, ws: Workspace, root: bytes) -> Pending:
    """Files and symlinks the overlay adds, modifies or removes (directories count by content).

    A path whose new content equals what it had (same bytes and mode) is not listed: commit keeps it.
    """
    reader = ws.reader
    added: list[str] = []
    modified: list[str] = []
    removed: list[str] = []
    for path in _depth_sorted(upper):
        row = upper.rows[path]
        old = lookup(reader.tree, root, path)
        if row.kind == WHITEOUT or (row.kind == DIR and (row.opaque or row.redirect)):
            if isinstance(old, DirEntry):
                removed.extend(p for p, e in walk_tree(reader.tree, old.tree, path + "/")
                               if not isinstance(e, DirEntry))
            elif old is not None:
                removed.append(path)
            if row.kind == DIR and row.redirect:
                added.extend(p for p, e in walk_tree(reader.tree, row.redirect, path + "/")
                             if not isinstance(e, DirEntry) and p not in upper.rows)
            continue
        if row.kind == DIR:
            continue
        if isinstance(old, DirEntry) or old is None:
            added.append(path)
        elif not _same_as_lower(upper, row, old):
            modified.append(path)
    return Pending(sorted(set(added)), sorted(set(modified) - set(added)), sorted(set(removed) - set(added)))
