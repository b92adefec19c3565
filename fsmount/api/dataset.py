"""fsmount.Dataset: the dataset lifecycle with clearml.Dataset's method names; the CLI calls only this."""

from __future__ import annotations

import getpass
import json
import logging
import os
import shutil
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsmount.api.local_copy import clear_folder, materialise
from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.commit.finalize import ChangeSet, finalize, merged_base
from fsmount.commit.locks import writer_lock
from fsmount.commit.staging import SESSION, Staged, StagingJournal, entry_to_json, source_stamp
from fsmount.commit.uploader import (
    DEFAULT_BLOCK_SIZE,
    SourceFile,
    Uploader,
    UploadStats,
    file_sha256,
)
from fsmount.errors import FsmountError, NotFoundError, StateError, UsageError
from fsmount.format.hashing import digest, new_version_id, object_key, record_key, state_key
from fsmount.format.objects import (
    EMPTY_TREE_HASH,
    READABLE_STATES,
    DirEntry,
    FileEntry,
    SymlinkEntry,
    VersionRecord,
    VersionState,
)
from fsmount.format.tree_edit import Change, TreeEditor, diff_trees, lookup, split_path, walk_tree

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


@dataclass
class SyncResult:
    """What `sync` changed, path by path."""

    added: list[str]
    modified: list[str]
    removed: list[str]


def _current_draft_file(ws: Workspace) -> Path:
    return ws.data_home / "current_drafts.json"


def _scan(folder: Path, dest: str) -> Iterator[tuple[str, str, str]]:
    """(kind, dataset path, source path) for everything under `folder`; symlinks are not followed."""
    prefix = "/".join(split_path(dest))
    for dirpath, dirnames, filenames in os.walk(folder):
        for name in dirnames + filenames:
            try:
                name.encode("utf-8")
            except UnicodeEncodeError:
                shown = (
                    os.path.join(dirpath, name).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
                )
                raise UsageError(f"{shown}: the file name is not valid UTF-8; rename it first") from None
        rel = os.path.relpath(dirpath, folder)
        rel = "" if rel == "." else rel
        base = "/".join(p for p in (prefix, rel) if p)
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                dirnames.remove(d)
                yield "symlink", f"{base}/{d}".lstrip("/"), full
        if base and not filenames and not dirnames:
            yield "dir", base, dirpath
        for f in filenames:
            full = os.path.join(dirpath, f)
            mode = os.lstat(full).st_mode
            kind = "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else None
            if kind:
                yield kind, f"{base}/{f}".lstrip("/"), full


class Dataset:
    """One dataset version: a draft being built, or a final version to read."""

    def __init__(self, workspace: Workspace, state: VersionState) -> None:
        self.workspace = workspace
        self._state = state
        self._record: VersionRecord | None = None

    # -- identity ----------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def project(self) -> str:
        return self._state.project

    @property
    def version(self) -> str:
        return self._state.version

    @property
    def parents(self) -> list[str]:
        return list(self._state.parents)

    @property
    def tags(self) -> list[str]:
        return list(self._state.tags)

    @property
    def state(self) -> str:
        return self._state.state

    @property
    def description(self) -> str:
        return self._state.description

    @property
    def is_final(self) -> bool:
        return self._state.state in READABLE_STATES

    def __repr__(self) -> str:
        return f"<Dataset {self.project}/{self.name}@{self.version} {self.id} {self.state}>"

    def refresh(self) -> Dataset:
        self._state = registry.read_state(self.workspace.store, self.id)
        return self

    @property
    def record(self) -> VersionRecord:
        if self._record is None:
            if not self.is_final:
                raise StateError(f"dataset version {self.id} is {self.state}: it has no content yet")
            self._record = self.workspace.reader.record(self.id)
        return self._record

    # -- finding and creating ---------------------------------------------------------

    @staticmethod
    def _ws(workspace: Workspace | None, store: str | None, **kw: Any) -> Workspace:
        return workspace or Workspace(store, **kw)

    @classmethod
    def create(
        cls,
        dataset_name: str,
        dataset_project: str,
        dataset_version: str | None = None,
        parent_datasets: list[str] | None = None,
        dataset_tags: list[str] | None = None,
        description: str | None = None,
        *,
        block_size: int | None = None,
        workspace: Workspace | None = None,
        store: str | None = None,
    ) -> Dataset:
        """A new draft version. Parents are REFs and must be final.

        The block size defaults to the first parent's, so that unchanged blocks of
        modified files are shared with it (and never uploaded or downloaded again).
        """
        ws = cls._ws(workspace, store)
        for label, value in (("project", dataset_project), ("name", dataset_name)):
            if not value or "@" in value or value.startswith("tag:") or value != value.strip():
                raise UsageError(f"invalid dataset {label} {value!r}")
        if "/" in dataset_name:
            raise UsageError(f"invalid dataset name {dataset_name!r}: it may not contain '/'")
        states = registry.list_states(ws.store) if parent_datasets or not dataset_version else None
        parents = [registry.resolve(ws.store, p, states=states).id for p in parent_datasets or []]
        if block_size is None:
            block_size = ws.reader.record(parents[0]).block_size if parents else DEFAULT_BLOCK_SIZE
        if block_size < 4096 or block_size > 2**30:
            raise UsageError("block size must be between 4 KiB and 1 GiB")
        if len(set(parents)) != len(parents):
            raise UsageError("the same parent is given twice")
        if dataset_version is None:
            same = [s for s in states or [] if s.project == dataset_project and s.name == dataset_name]
            dataset_version = _next_version(registry.newest(same))
        now = time.time()
        st = VersionState(
            id=new_version_id(),
            project=dataset_project,
            name=dataset_name,
            version=dataset_version,
            parents=tuple(parents),
            state="draft",
            tags=tuple(dataset_tags or ()),
            description=description or "",
            created=now,
            updated=now,
            author=_user(),
        )
        registry.create_state(ws.store, st)
        ds = cls(ws, st)
        ds._journal().create({"id": st.id, "store": ws.store_url, "block_size": block_size})
        ds._set_current()
        return ds

    @classmethod
    def get(
        cls,
        dataset_id: str | None = None,
        dataset_project: str | None = None,
        dataset_name: str | None = None,
        dataset_version: str | None = None,
        dataset_tags: list[str] | None = None,
        *,
        ref: str | None = None,
        only_final: bool = True,
        workspace: Workspace | None = None,
        store: str | None = None,
    ) -> Dataset:
        """Find one version by id (or id prefix), project+name[+version], tags, or any REF."""
        ws = cls._ws(workspace, store)
        if ref is None:
            if dataset_id:
                ref = dataset_id
            elif dataset_name and dataset_project:
                ref = f"{dataset_project}/{dataset_name}" + (f"@{dataset_version}" if dataset_version else "")
            elif dataset_tags:
                states = [s for s in registry.list_states(ws.store) if s.state in READABLE_STATES]
                hits = [
                    s
                    for s in states
                    if set(dataset_tags) <= set(s.tags)
                    and (dataset_project is None or s.project == dataset_project)
                ]
                found = registry.newest(hits)
                if found is None:
                    raise NotFoundError(f"no final dataset version carries tags {dataset_tags}")
                return cls(ws, found)
            else:
                raise UsageError("give a dataset id, a project and name, tags, or a REF")
        return cls(ws, registry.resolve(ws.store, ref, project=dataset_project, require_final=only_final))

    @classmethod
    def current_draft(cls, workspace: Workspace | None = None, store: str | None = None) -> Dataset:
        """The draft `create` remembered for this store (what add/remove/close act on by default)."""
        ws = cls._ws(workspace, store)
        try:
            ids = json.loads(_current_draft_file(ws).read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            ids = {}
        draft = ids.get(ws.store_url)
        if not draft:
            raise UsageError("no current draft: run 'fsmount create' first, or pass --id")
        return cls(ws, registry.read_state(ws.store, draft))

    @classmethod
    def list_datasets(
        cls,
        dataset_project: str | None = None,
        dataset_name: str | None = None,
        tags: list[str] | None = None,
        *,
        include_drafts: bool = True,
        workspace: Workspace | None = None,
        store: str | None = None,
    ) -> list[Dataset]:
        ws = cls._ws(workspace, store)
        out = []
        for s in registry.list_states(ws.store):
            if dataset_project is not None and s.project != dataset_project:
                continue
            if dataset_name is not None and s.name != dataset_name:
                continue
            if tags and not set(tags) <= set(s.tags):
                continue
            if not include_drafts and s.state not in READABLE_STATES:
                continue
            out.append(cls(ws, s))
        return out

    def _set_current(self) -> None:
        path = _current_draft_file(self.workspace)
        try:
            ids = json.loads(path.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            ids = {}
        ids[self.workspace.store_url] = self.id
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ids))
        tmp.replace(path)

    # -- staging (drafts) -----------------------------------------------------------

    def _journal(self) -> StagingJournal:
        return StagingJournal(self.workspace.data_home / "drafts" / self.id)

    def _require_draft(self) -> StagingJournal:
        self.refresh()
        if self.state != "draft":
            already = "already " if self.is_final else ""
            raise StateError(f"dataset version {self.id} is {already}{self.state}: only a draft can change")
        journal = self._journal()
        if not journal.exists():
            raise StateError(f"draft {self.id} was created on another machine or its staging folder is gone")
        return journal

    @property
    def block_size(self) -> int:
        if self.is_final:
            return self.record.block_size
        return int(self._journal().meta().get("block_size", DEFAULT_BLOCK_SIZE))

    def add_files(
        self,
        path: str | os.PathLike[str],
        wildcard: str | None = None,
        dataset_path: str | None = None,
        recursive: bool = True,
    ) -> int:
        """Stage a file or a folder's contents (under `dataset_path`); returns entries staged."""
        journal = self._require_draft()
        src = Path(path)
        if not src.exists() and not src.is_symlink():
            raise UsageError(f"{path}: no such file or directory")
        src = src.absolute()
        dest = "/".join(split_path(dataset_path or ""))
        events = []
        if src.is_dir() and not src.is_symlink():
            import fnmatch

            for kind, dpath, spath in _scan(src, dest):
                if not recursive and "/" in dpath[len(dest) :].strip("/"):
                    continue
                if wildcard and kind != "dir" and not fnmatch.fnmatch(os.path.basename(spath), wildcard):
                    continue
                events.append({"op": "add", "kind": kind, "path": dpath, "src": spath})
        else:
            kind = "symlink" if src.is_symlink() else "file"
            if kind == "file" and not src.is_file():
                raise UsageError(f"{path} is not a regular file, folder or symlink")
            events.append(
                {
                    "op": "add",
                    "kind": kind,
                    "path": "/".join(p for p in (dest, src.name) if p),
                    "src": str(src),
                }
            )
        journal.append(events)
        return len(events)

    def remove_files(self, dataset_path: str) -> int:
        """Remove paths or globs, staged or inherited; returns how many paths matched."""
        journal = self._require_draft()
        staged = journal.replay()
        editor = TreeEditor(self.workspace.reader.tree, self._base_root())
        inherited = len(editor.remove_matching(dataset_path))
        from fsmount.commit.staging import _matches

        staged_hits = sum(1 for d in staged.adds if _matches(d, dataset_path))
        if inherited + staged_hits == 0:
            raise UsageError(f"nothing in the dataset matches {dataset_path!r}")
        journal.append([{"op": "remove", "pattern": dataset_path}])
        return inherited + staged_hits

    def _base_root(self) -> bytes:
        """Root of the merged parents; a new merged tree goes to the local cache only, not the store."""
        reader = self.workspace.reader
        return merged_base(reader, self.parents, reader.cache.put)

    def staged_bytes(self) -> int:
        """Bytes of the staged files still on disk (what `upload` and `close` will read)."""
        total = 0
        for kind, src in self._journal().replay().adds.values():
            if kind == "file":
                try:
                    total += os.stat(src).st_size
                except OSError:
                    pass
        return total

    def upload(self, show_progress: bool = False, progress: Progress | None = None) -> UploadStats:
        """Upload staged files; resumable: files already uploaded and unchanged are skipped."""
        journal = self._require_draft()
        with writer_lock(self.workspace.store):
            return self._upload(journal, progress)

    def _upload(self, journal: StagingJournal, progress: Progress | None) -> UploadStats:
        staged = journal.replay()
        todo: list[SourceFile] = []
        from fsmount.commit.uploader import source_file

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
        uploader = Uploader(self.workspace.store, self.id, block_size=self.block_size, progress=progress)
        batch: list[dict[str, Any]] = []
        last = time.monotonic()
        for f, entry in uploader.upload(todo):
            batch.append(
                {
                    "op": "uploaded",
                    "path": f.dest,
                    "stamp": source_stamp(f.src),
                    "entry": entry_to_json(entry),
                    "session": SESSION,
                }
            )
            if len(batch) >= 512 or time.monotonic() - last > 1.0:
                journal.append(batch)
                batch, last = [], time.monotonic()
        journal.append(batch)
        return uploader.stats

    def finalize(
        self, message: str = "", publish: bool = False, progress: Progress | None = None
    ) -> VersionRecord:
        """Upload what remains and make this draft a final version (clearml's close)."""
        journal = self._require_draft()
        with writer_lock(self.workspace.store):
            self._upload(journal, progress)
            staged = journal.replay()
            lost = self._lost_uploads(staged)
            if lost:
                log.warning("%d files uploaded earlier lost blocks (gc?); uploading them again", len(lost))
                journal.append([{"op": "forget_upload", "path": d} for d in lost])
                self._upload(journal, progress)
                staged = journal.replay()
            changes = ChangeSet(removes=list(staged.removes), deletes=list(staged.deletes))
            for dest, (kind, src) in staged.adds.items():
                if kind == "file":
                    changes.puts[dest] = staged.uploaded[dest][1]
                elif kind == "symlink":
                    st = os.lstat(src)
                    changes.puts[dest] = SymlinkEntry(
                        dest.rsplit("/", 1)[-1], 0o777, st.st_mtime_ns, os.readlink(src), self.id
                    )
                else:
                    st = os.stat(src)
                    changes.mkdirs[dest] = (stat.S_IMODE(st.st_mode), st.st_mtime_ns)
            record = finalize(
                self.workspace.store,
                self.workspace.reader,
                self._state,
                changes,
                block_size=self.block_size,
                message=message,
                publish=publish,
            )
        journal.discard()
        self.refresh()
        self._record = record
        return record

    close = finalize

    def _lost_uploads(self, staged: Staged) -> list[str]:
        """Files uploaded by an earlier process whose blocks are no longer in the store.

        gc never runs while this process holds the writer lock, but it may have run between
        an earlier `upload` and this `close`; only those earlier uploads need checking.
        """
        earlier = [(dest, e) for dest, (_, e, session) in staged.uploaded.items() if session != SESSION]
        blocks = {b if isinstance(b, bytes) else b[0] for _, e in earlier for b in e.blocks}
        if not blocks:
            return []
        store = self.workspace.store
        with ThreadPoolExecutor(32) as pool:
            present = dict(zip(blocks, pool.map(lambda h: store.exists(object_key(h)), blocks), strict=True))
        return [
            dest
            for dest, e in earlier
            if not all(present[b if isinstance(b, bytes) else b[0]] for b in e.blocks)
        ]

    # -- sync ----------------------------------------------------------------------

    def sync_folder(
        self,
        local_path: str | os.PathLike[str],
        dataset_path: str | None = None,
        progress: Progress | None = None,
    ) -> SyncResult:
        """Make the draft's content equal to `local_path`: stage adds, changes and removals."""
        journal = self._require_draft()
        folder = Path(local_path)
        if not folder.is_dir():
            raise UsageError(f"{local_path}: not a folder")
        prefix = "/".join(split_path(dataset_path or ""))
        reader = self.workspace.reader
        base = self._base_root()
        sub = base
        if prefix:
            e = lookup(reader.tree, base, prefix)
            sub = e.tree if isinstance(e, DirEntry) else EMPTY_TREE_HASH
        old = {p: e for p, e in walk_tree(reader.tree, sub) if not isinstance(e, DirEntry)}
        local = list(_scan(folder.absolute(), ""))
        local_paths = {p for _, p, _ in local}
        result = SyncResult([], [], [])
        events: list[dict[str, Any]] = []

        def full(p: str) -> str:
            return f"{prefix}/{p}" if prefix else p

        for p in sorted(old):
            if p not in local_paths:
                result.removed.append(full(p))
                events.append({"op": "delete", "path": full(p)})
        # Same-size files may be unchanged: hash them and compare with the stored sha256.
        same_size = [
            (p, s)
            for kind, p, s in local
            if kind == "file"
            and isinstance(old.get(p), FileEntry)
            and (old[p].size, old[p].mode) == _size_mode(s)  # a chmod alone is a modification too
        ]
        with ThreadPoolExecutor(8) as pool:
            unchanged = {
                p
                for (p, s), h in zip(same_size, pool.map(lambda x: file_sha256(x[1]), same_size), strict=True)
                if h == old[p].sha256
            }  # type: ignore[union-attr]
        for kind, p, s in local:
            if p in unchanged:
                continue
            prev = old.get(p)
            if kind == "symlink" and isinstance(prev, SymlinkEntry) and prev.target == os.readlink(s):
                continue
            if kind == "dir":
                if lookup(reader.tree, sub, p) is None:
                    events.append({"op": "add", "kind": "dir", "path": full(p), "src": s})
                continue
            (result.modified if prev is not None else result.added).append(full(p))
            events.append({"op": "add", "kind": kind, "path": full(p), "src": s})
        journal.append(events)
        for paths in (result.added, result.modified, result.removed):
            paths.sort()
        return result

    # -- lifecycle after final ------------------------------------------------------

    def publish(self) -> None:
        def change(st: VersionState) -> None:
            if st.state == "published":
                raise StateError(f"dataset version {st.id} is already published")
            if st.state != "final":
                raise StateError(
                    f"dataset version {st.id} is {st.state}: only a final version can be published"
                )
            st.state = "published"

        self._state = registry.update_state(self.workspace.store, self.id, change)

    def add_tags(self, tags: list[str]) -> None:
        self._state = registry.update_state(
            self.workspace.store, self.id, lambda st: setattr(st, "tags", tuple(set(st.tags) | set(tags)))
        )

    def remove_tags(self, tags: list[str]) -> None:
        self._state = registry.update_state(
            self.workspace.store, self.id, lambda st: setattr(st, "tags", tuple(set(st.tags) - set(tags)))
        )

    def set_description(self, description: str) -> None:
        self._state = registry.update_state(
            self.workspace.store, self.id, lambda st: setattr(st, "description", description)
        )

    def abort(self) -> None:
        """Give up a draft: it stays listed as aborted; its uploaded blocks become garbage."""

        def change(st: VersionState) -> None:
            if st.state != "draft":
                raise StateError(f"dataset version {st.id} is {st.state}, not a draft")
            st.state = "aborted"

        self._state = registry.update_state(self.workspace.store, self.id, change)
        self._journal().discard()

    def delete(self, force: bool = False) -> None:
        """Remove this version from the store; refused while another version has it as parent."""
        children = [s for s in registry.list_states(self.workspace.store) if self.id in s.parents]
        if children and not force:
            names = ", ".join(c.id[:12] for c in children[:3])
            raise StateError(
                f"dataset version {self.id} is a parent of {len(children)} version(s) ({names});"
                " use --force to delete it anyway"
            )
        store = self.workspace.store
        store.delete(state_key(self.id))
        store.delete(record_key(self.id))
        self._journal().discard()

    # -- reading ---------------------------------------------------------------------

    def iter_entries(self, dataset_path: str | None = None) -> Iterator[tuple[str, Any]]:
        reader = self.workspace.reader
        root = self.record.root
        prefix = "/".join(split_path(dataset_path or ""))
        if prefix:
            e = lookup(reader.tree, root, prefix)
            if e is None:
                raise NotFoundError(f"{dataset_path}: no such path in {self.id}")
            if not isinstance(e, DirEntry):
                yield prefix, e
                return
            root = e.tree
            prefix += "/"
        yield from walk_tree(reader.tree, root, prefix)

    def list_files(self, dataset_path: str | None = None) -> list[str]:
        return [p for p, e in self.iter_entries(dataset_path) if not isinstance(e, DirEntry)]

    def changes(self) -> list[Change]:
        """What this version added, modified and removed relative to its merged parents."""
        return list(diff_trees(self.workspace.reader.tree, self.record.base, self.record.root))

    def list_added_files(self) -> list[str]:
        return [c.path for c in self.changes() if c.kind == "added"]

    def list_modified_files(self) -> list[str]:
        return [c.path for c in self.changes() if c.kind == "modified"]

    def list_removed_files(self) -> list[str]:
        return [c.path for c in self.changes() if c.kind == "removed"]

    def lineage(self) -> list[str]:
        """This version and every ancestor, breadth first, each once."""
        out, queue, seen = [], [self.id], set()
        while queue:
            vid = queue.pop(0)
            if vid in seen:
                continue
            seen.add(vid)
            out.append(vid)
            try:
                queue.extend(self.workspace.reader.record(vid).parents)
            except FsmountError:
                continue
        return out

    def get_local_copy(self, progress: Progress | None = None) -> str:
        """A read-only copy served through the shared cache; made once per version and host."""
        copies = self.workspace.cache.directory / "copies"
        target = copies / self.id
        if (copies / f"{self.id}.complete").exists():
            return str(target)
        tmp = copies / f".tmp-{self.id}-{uuid.uuid4().hex[:8]}"
        try:
            materialise(self.workspace.reader, self.record.root, tmp, read_only=True, progress=progress)
            if target.exists():
                shutil.rmtree(target)
            tmp.rename(target)
            (copies / f"{self.id}.complete").touch()
        finally:
            if tmp.exists():
                shutil.rmtree(tmp, ignore_errors=True)
        return str(target)

    def get_mutable_local_copy(
        self, target_folder: str | os.PathLike[str], overwrite: bool = False, progress: Progress | None = None
    ) -> str:
        """A writable copy in `target_folder`; refuses a non-empty folder unless `overwrite`."""
        target = Path(target_folder)
        if target.exists() and not target.is_dir():
            raise UsageError(f"{target_folder} exists and is not a folder")
        if target.is_dir() and any(target.iterdir()):
            if not overwrite:
                raise UsageError(f"{target_folder} is not empty: use --overwrite to replace its contents")
            _ = self.record  # fail on a bad version before deleting anything
            clear_folder(target)
        materialise(self.workspace.reader, self.record.root, target, read_only=False, progress=progress)
        return str(target)

    def verify_dataset_hash(self, workers: int = 16) -> list[str]:
        """Re-hash every tree and block the store holds for this version; list what is wrong."""
        store = self.workspace.store
        problems: list[str] = []

        def fetch(h: bytes) -> bytes | None:
            try:
                data = store.get(object_key(h))
            except NotFoundError:
                return None
            return data

        def check_tree(h: bytes, where: str) -> None:
            data = fetch(h)
            if data is None:
                problems.append(f"missing tree {h.hex()} ({where})")
            elif digest(data) != h:
                problems.append(f"corrupt tree {h.hex()} ({where})")

        def check_file(path: str, e: FileEntry) -> str | None:
            import hashlib

            whole = hashlib.sha256()
            for h, off, length, _ in e.spans():
                data = fetch(h)
                if data is None:
                    return f"missing block {h.hex()} of {path}"
                if digest(data) != h:
                    return f"corrupt block {h.hex()} of {path}"
                whole.update(memoryview(data)[off : off + length])
            if whole.digest() != e.sha256:
                return f"{path}: file hash does not match its blocks"
            return None

        rec = self.record
        check_tree(rec.root, "root")
        files = []
        for path, e in walk_tree(self.workspace.reader.tree, rec.root):
            if isinstance(e, DirEntry):
                check_tree(e.tree, path)
            elif isinstance(e, FileEntry):
                files.append((path, e))
        with ThreadPoolExecutor(workers) as pool:
            problems.extend(p for p in pool.map(lambda pe: check_file(*pe), files) if p)
        return problems

    def info(self) -> dict[str, Any]:
        d: dict[str, Any] = {
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "version": self.version,
            "state": self.state,
            "tags": self.tags,
            "description": self.description,
            "parents": self.parents,
            "created": self._state.created,
            "author": self._state.author,
        }
        if self.is_final:
            rec = self.record
            changes = self.changes()
            d.update(
                {
                    "lineage": self.lineage(),
                    "files": rec.files,
                    "bytes": rec.nbytes,
                    "message": rec.message,
                    "finalized": rec.finalized,
                    "block_size": rec.block_size,
                    "added": [c.path for c in changes if c.kind == "added"],
                    "modified": [c.path for c in changes if c.kind == "modified"],
                    "removed": [c.path for c in changes if c.kind == "removed"],
                }
            )
        else:
            staged = self._journal().replay()
            d.update(
                {
                    "staged_files": len(staged.adds),
                    "staged_removals": staged.removes,
                    "uploaded_files": len(staged.uploaded),
                }
            )
        return d


def _size_mode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, stat.S_IMODE(st.st_mode)


def _next_version(prev: VersionState | None) -> str:
    """1.0.0 for a new dataset; otherwise bump the last numeric part of the newest version."""
    if prev is None:
        return "1.0.0"
    parts = prev.version.split(".")
    if parts and parts[-1].isdigit():
        parts[-1] = str(int(parts[-1]) + 1)
        return ".".join(parts)
    return prev.version + ".1"


def _user() -> str:
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def sync(
    folder: str | os.PathLike[str],
    *,
    dataset_id: str | None = None,
    project: str | None = None,
    name: str | None = None,
    parents: list[str] | None = None,
    version: str | None = None,
    tags: list[str] | None = None,
    message: str = "",
    publish: bool = False,
    block_size: int | None = None,
    workspace: Workspace | None = None,
    progress: Progress | None = None,
) -> tuple[Dataset, SyncResult]:
    """create + compare + upload + finalize in one go (clearml-data sync).

    With project and name but no parents, the newest final version of that dataset (if
    any) becomes the parent, so repeated syncs of a folder build a lineage.
    """
    ws = workspace or Workspace()
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: not a folder")
    if dataset_id:
        ds = Dataset(ws, registry.resolve(ws.store, dataset_id, require_final=False))
    else:
        if not (project and name):
            raise UsageError("sync needs --id, or --project and --name")
        if parents is None:
            prev = [
                s
                for s in registry.list_states(ws.store)
                if s.project == project and s.name == name and s.state in READABLE_STATES
            ]
            newest = registry.newest(prev)
            parents = [newest.id] if newest else []
        ds = Dataset.create(name, project, version, parents, tags, workspace=ws, block_size=block_size)
    try:
        result = ds.sync_folder(folder, progress=None)
        ds.finalize(message=message, publish=publish, progress=progress)
    except BaseException:
        log.info("sync of %s interrupted; 'fsmount close --id %s' finishes it", folder, ds.id)
        raise
    return ds, result


def gc(workspace: Workspace, grace: float = 3600.0, dry_run: bool = False) -> dict[str, int]:
    """Delete objects no version reaches. Holds the gc lock, so no upload or commit runs meanwhile."""
    from fsmount.commit.locks import gc_lock
    from fsmount.format.hashing import hash_from_key

    store, reader = workspace.store, workspace.reader
    with gc_lock(store):
        states = registry.list_states(store)
        drafts = [s.created for s in states if s.state == "draft"]
        records = [reader.record(s.id) for s in states if s.state in READABLE_STATES]
        keep: set[bytes] = set()
        # Roots keep trees and blocks; bases (kept for listing changes) keep trees only, so a
        # deleted parent's data can go while its children still show their diffs.
        full: set[bytes] = set()
        for rec in records:
            _reach(reader, rec.root, full, keep, with_blocks=True)
        trees_only: set[bytes] = set(full)
        for rec in records:
            _reach(reader, rec.base, trees_only, keep, with_blocks=False)
        from fsmount.commit.locks import STALE_AFTER

        for info in store.list("locks/"):
            if time.time() - info.mtime > STALE_AFTER:  # left by a crashed process
                store.delete(info.key)
        cutoff = time.time() - grace
        if drafts:
            cutoff = min(cutoff, min(drafts) - grace)  # an open draft may reference newer objects
        deleted = kept_young = freed = 0
        for info in store.list("objects/"):
            h = hash_from_key(info.key)
            if h is None or h in keep:
                continue
            if info.mtime >= cutoff:
                kept_young += 1
                continue
            if not dry_run:
                store.delete(info.key)
            deleted += 1
            freed += info.size
    return {"deleted": deleted, "bytes_freed": freed, "kept_recent": kept_young, "reachable": len(keep)}


def _reach(reader: Any, tree: bytes, seen: set[bytes], keep: set[bytes], with_blocks: bool) -> None:
    """Add `tree`, its subtrees and (optionally) their blocks to `keep`; shared subtrees once."""
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
