"""fsmount.Dataset: the dataset lifecycle with clearml.Dataset's method names; the CLI calls only this.

A facade: drafts (commit/drafts.py), staging and close (commit/close.py), lifecycle rules
(commit/lifecycle.py), gc (commit/gc.py), folder scanning (api/scan.py), verify (check/verify.py)
and local copies (api/local_copy.py) each live in their own module.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any

from fsmount.api import catalog, external, reading, scan
from fsmount.api import metadata as api_metadata
from fsmount.api import warm as warm_mod
from fsmount.api.identity import VersionView
from fsmount.api.local_copy import mutable_copy, shared_copy
from fsmount.api.scan import SyncResult
from fsmount.api.selection import Selection, select_root
from fsmount.api.workspace import Workspace
from fsmount.check.folder import compare_folder
from fsmount.check.suspects import Suspects
from fsmount.check.verify import RepairReport, find_problems, repair_version
from fsmount.commit import lifecycle, registry
from fsmount.commit.close import (
    close_draft,
    packing_of,
    parents_content,
    staged_bytes,
    staged_summary,
    upload_staged,
    writing,
)
from fsmount.commit.drafts import Drafts, check_names, stale_drafts
from fsmount.commit.finalize import merged_base
from fsmount.commit.packer import packing
from fsmount.commit.staging import StagingJournal, matches
from fsmount.commit.uploader import DEFAULT_BLOCK_SIZE, UploadStats
from fsmount.errors import NotFoundError, StateError, UsageError
from fsmount.format.objects import DirEntry, Entry
from fsmount.format.records import VersionRecord
from fsmount.format.tree_edit import Change, TreeEditor, split_path

__all__ = ["Dataset", "SyncResult"]

log = logging.getLogger(__name__)

Progress = Callable[[int], None]


class Dataset(VersionView):
    """One dataset version: a draft being built, or a final version to read."""

    # -- finding and creating ---------------------------------------------------------

    @staticmethod
    def _ws(workspace: Workspace | None, store: str | None, **kw: Any) -> Workspace:
        return workspace or Workspace(store, **kw)

    @staticmethod
    def _drafts_of(ws: Workspace) -> Drafts:
        return Drafts(ws.data_home, ws.store_url)

    @property
    def _drafts(self) -> Drafts:
        return self._drafts_of(self.workspace)

    @property
    def _suspects(self) -> Suspects:
        return Suspects(self.workspace.data_home, self.workspace.store_url)

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
        pack_threshold: str | int | None = None,
        pack_size: str | int | None = None,
        workspace: Workspace | None = None,
        store: str | None = None,
    ) -> Dataset:
        """A new draft version, made the current draft. Parents are REFs and must be final.

        The block size defaults to the first parent's, so that unchanged blocks of
        modified files are shared with it (and never uploaded or downloaded again).
        `pack_threshold` and `pack_size`, when given, are the draft's packing (else fsmount.config's).
        """
        ws = cls._ws(workspace, store)
        check_names(dataset_project, dataset_name)
        states = registry.list_states(ws.store) if parent_datasets or not dataset_version else None
        parents = [registry.resolve(ws.store, p, states=states).id for p in parent_datasets or []]
        if block_size is None:
            block_size = ws.reader.record(parents[0]).block_size if parents else DEFAULT_BLOCK_SIZE
        st = cls._drafts_of(ws).create(
            ws.store,
            dataset_project,
            dataset_name,
            parents,
            version=dataset_version,
            tags=dataset_tags or (),
            description=description or "",
            block_size=block_size,
            states=states,
            meta=packing(pack_threshold, pack_size).to_meta()
            if pack_threshold is not None or pack_size is not None else None,
        )
        return cls(ws, st)

    @classmethod
    def get(
        cls,
        dataset_id: str | None = None,
        dataset_project: str | None = None,
        dataset_name: str | None = None,
        dataset_version: str | None = None,
        dataset_tags: list[str] | None = None,
        only_published: bool = False,
        auto_create: bool = False,
        writable_copy: bool = False,
        *,
        ref: str | None = None,
        only_final: bool = True,
        workspace: Workspace | None = None,
        store: str | None = None,
    ) -> Dataset:
        """Find one version by id (or id prefix), project+name[+version], tags, or any REF.

        As in clearml: `only_published` wants a published version; `auto_create` makes a new
        draft of project/name when there is no such dataset; `writable_copy` returns a new draft
        whose parent is the version found.
        """
        ws = cls._ws(workspace, store)
        if ref is None:
            ref = catalog.ref_of(dataset_id, dataset_project, dataset_name, dataset_version)
        try:
            st = catalog.find(ws, ref, project=dataset_project, tags=dataset_tags, only_final=only_final,
                              only_published=only_published)
        except NotFoundError:
            if not (auto_create and dataset_project and dataset_name):
                raise
            return cls.create(dataset_name, dataset_project, dataset_version, dataset_tags=dataset_tags,
                              workspace=ws)
        if writable_copy:
            return cls.create(st.name, st.project, parent_datasets=[st.id], workspace=ws)
        return cls(ws, st)

    @classmethod
    def current_draft(cls, workspace: Workspace | None = None, store: str | None = None) -> Dataset:
        """The draft `create` remembered for this store (what add/remove/close act on by default)."""
        ws = cls._ws(workspace, store)
        draft = cls._drafts_of(ws).current()
        if not draft:
            raise UsageError("no current draft: run 'fsmount create' first, or pass --id")
        return cls(ws, registry.read_state(ws.store, draft))

    # -- the catalogue (api/catalog.py) and metadata (api/metadata.py) ----------------------------

    @classmethod
    def list_versions(cls, dataset_project: str | None = None, dataset_name: str | None = None,
                      tags: list[str] | None = None, *, include_drafts: bool = True,
                      workspace: Workspace | None = None, store: str | None = None) -> list[Dataset]:
        """The versions of `dataset_project`/`dataset_name` (exact) carrying every tag, as Datasets."""
        ws = cls._ws(workspace, store)
        found = catalog.select_versions(ws, dataset_project, dataset_name, tags,
                                        include_drafts=include_drafts)
        stale = stale_drafts(ws.store, found)
        return [cls(ws, s, stale=stale.get(s.id)) for s in found]

    @classmethod
    def list_datasets(cls, dataset_project: str | None = None, partial_name: str | None = None,
                      tags: list[str] | None = None, ids: list[str] | None = None,
                      only_completed: bool = True, recursive_project_search: bool = True, *,
                      workspace: Workspace | None = None, store: str | None = None) -> list[dict[str, Any]]:
        """clearml's list_datasets: dicts (id, project, name, version, state, tags, created, files, bytes)."""
        return catalog.search(cls._ws(workspace, store), dataset_project, partial_name, tags, ids,
                              only_completed, recursive_project_search)

    @classmethod
    def squash(cls, dataset_name: str, dataset_ids: list[str] | None = None,
               dataset_project_name_pairs: list[tuple[str, str]] | None = None,
               dataset_project: str | None = None, *, dataset_version: str | None = None,
               workspace: Workspace | None = None, store: str | None = None) -> Dataset:
        """One standalone final version: the given versions merged in order (later wins); no data copied."""
        ws = cls._ws(workspace, store)
        refs = list(dataset_ids or []) + [f"{p}/{n}" for p, n in dataset_project_name_pairs or []]
        return cls(ws, catalog.squash(ws, dataset_name, refs, dataset_project, dataset_version))

    @classmethod
    def rename(cls, new_dataset_name: str, dataset_project: str, dataset_name: str, *,
               workspace: Workspace | None = None, store: str | None = None) -> None:
        ws = cls._ws(workspace, store)
        catalog.rename(ws, dataset_project, dataset_name, dataset_project, new_dataset_name)

    @classmethod
    def move_to_project(cls, new_dataset_project: str, dataset_project: str, dataset_name: str, *,
                        workspace: Workspace | None = None, store: str | None = None) -> None:
        ws = cls._ws(workspace, store)
        catalog.rename(ws, dataset_project, dataset_name, new_dataset_project, dataset_name)

    @classmethod
    def delete_dataset(cls, dataset_project: str, dataset_name: str, force: bool = False, *,
                       workspace: Workspace | None = None, store: str | None = None) -> dict[str, Any]:
        """Delete every version of a dataset; says how much gc may now remove."""
        return catalog.delete_dataset(cls._ws(workspace, store), dataset_project, dataset_name, force)

    def set_metadata(self, metadata: object, metadata_name: str = "metadata", ui_visible: bool = True,
                     *, fmt: str | None = None) -> None:
        """Attach a dict (JSON), a DataFrame (CSV, or Parquet with fmt="parquet") or bytes; <= 64 MiB."""
        api_metadata.set_metadata(self.workspace.store, self.id, metadata, metadata_name, ui_visible, fmt)

    def get_metadata(self, metadata_name: str = "metadata") -> Any:
        return api_metadata.get_metadata(self.workspace.store, self.id, metadata_name)

    def list_metadata(self) -> list[dict[str, Any]]:
        """Each attachment: name, kind, size, hash, ui_visible."""
        return api_metadata.list_metadata(self.workspace.store, self.id)

    # -- staging (drafts) -----------------------------------------------------------

    def _journal(self) -> StagingJournal:
        return self._drafts.journal(self.id)

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
        events = scan.add_events(
            src.absolute(), "/".join(split_path(dataset_path or "")), wildcard, recursive
        )
        journal.append(events)
        return scan.entries_staged(events)

    def add_external_files(self, source_url: str | Sequence[str], wildcard: str | None = None,
                           dataset_path: str | None = None, recursive: bool = True, *,
                           hash_content: bool = False) -> int:
        """Stage links to files that stay at `source_url` (files, folders or prefixes; a str or a list).
        Every URL is statted (with `hash_content`, read once) before any is staged. Returns links staged."""
        journal = self._require_draft()
        urls = [source_url] if isinstance(source_url, str) else list(source_url)
        events = [ev for u in urls for ev in external.link_events(
            u, wildcard=wildcard, dataset_path=dataset_path, recursive=recursive, hash_content=hash_content,
            block_size=self.block_size)]
        journal.append(events)
        return len(events)

    def remove_files(self, dataset_path: str) -> int:
        """Remove paths or globs, staged or inherited; returns how many paths matched."""
        journal = self._require_draft()
        staged = journal.replay()
        editor = TreeEditor(self.workspace.reader.tree, self._base_root())
        inherited = len(editor.remove_matching(dataset_path))
        staged_hits = sum(1 for d in staged.adds if matches(d, dataset_path))
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
        return staged_bytes(self._journal().replay())

    def upload(
        self, progress: Progress | None = None, pack_threshold: str | int | None = None,
        pack_size: str | int | None = None,
    ) -> UploadStats:
        """Upload staged files; resumable: files already uploaded and unchanged are skipped.
        Small files are packed (the draft's packing unless `pack_threshold`/`pack_size` are given)."""
        journal = self._require_draft()
        suspect = self._suspects.load()
        before = set(suspect)
        pack = packing_of(journal, pack_threshold, pack_size)
        reuse = parents_content(self.workspace.reader, self.parents, pack.threshold, suspect)
        with writing(self.workspace.store, self.id) as lock:
            stats = upload_staged(
                self.workspace.store, journal, self.id, self.block_size, progress, lock=lock, suspect=suspect,
                pack=pack, reuse=reuse,
            )
        self._suspects.update(remove=before - suspect)
        return stats

    def finalize(
        self, message: str = "", publish: bool = False, progress: Progress | None = None,
        pack_threshold: str | int | None = None, pack_size: str | int | None = None,
    ) -> VersionRecord:
        """Upload what remains and make this draft a final version (clearml's close). Small files
        are packed (the draft's packing unless `pack_threshold`/`pack_size` are given)."""
        journal = self._require_draft()
        ws = self.workspace
        suspect = self._suspects.load()
        before = set(suspect)
        record = close_draft(
            ws.store,
            ws.reader,
            self._state,
            journal,
            block_size=self.block_size,
            message=message,
            publish=publish,
            progress=progress,
            suspect=suspect,
            pack=packing_of(journal, pack_threshold, pack_size),
        )
        self._suspects.update(remove=before - suspect)
        self._drafts.closed(self.id)
        self.refresh()
        self._record = record
        return record

    close = finalize

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
        result, events = scan.compare(
            self.workspace.reader, self._base_root(), prefix, folder, frozenset(self._suspects.load())
        )
        journal.append(events)
        return result

    # -- lifecycle ---------------------------------------------------------------------

    def publish(self) -> None:
        self._state = lifecycle.publish(self.workspace.store, self.id)

    def add_tags(self, tags: list[str]) -> None:
        self._state = lifecycle.add_tags(self.workspace.store, self.id, tags)

    def remove_tags(self, tags: list[str]) -> None:
        self._state = lifecycle.remove_tags(self.workspace.store, self.id, tags)

    def set_description(self, description: str) -> None:
        self._state = lifecycle.set_description(self.workspace.store, self.id, description)

    def abort(self) -> None:
        """Give up a draft: it stays listed as aborted; its uploaded blocks become garbage."""
        self._state = lifecycle.abort(self.workspace.store, self.id)
        self._drafts.closed(self.id)

    def delete(self, force: bool = False) -> None:
        """Remove this version from the store; refused while another version has it as parent."""
        lifecycle.delete(self.workspace.store, self.id, force=force)
        self._drafts.closed(self.id)

    # -- reading ---------------------------------------------------------------------

    def iter_entries(self, dataset_path: str | None = None) -> Iterator[tuple[str, Entry]]:
        return reading.entries_under(self.workspace.reader, self.record.root, dataset_path, self.id)

    def list_files(self, dataset_path: str | None = None) -> list[str]:
        return [p for p, e in self.iter_entries(dataset_path) if not isinstance(e, DirEntry)]

    def changes(self) -> list[Change]:
        """What this version added, modified and removed relative to its merged parents."""
        return reading.changes(self.workspace.reader, self.record.base, self.record.root)

    def diff(self, other: Dataset) -> list[Change]:
        """What changed from this version to `other`, file by file (equal subtrees are skipped)."""
        return reading.changes(self.workspace.reader, self.record.root, other.record.root)

    def list_added_files(self) -> list[str]:
        return reading.by_kind(self.changes())["added"]

    def list_modified_files(self) -> list[str]:
        return reading.by_kind(self.changes())["modified"]

    def list_removed_files(self) -> list[str]:
        return reading.by_kind(self.changes())["removed"]

    def lineage(self) -> list[str]:
        """This version and every ancestor, breadth first, each once."""
        return reading.lineage(self.workspace.reader, self.id)

    def get_local_copy(self, progress: Progress | None = None, part: int | None = None,
                       num_parts: int | None = None, files: Sequence[str] = ()) -> str:
        """A read-only copy served through the shared cache; made once per version (or part) and host.

        `part`/`num_parts` (clearml's names) take one of N disjoint parts of about equal bytes,
        the same split on every machine; `files` keeps the paths matching those globs.
        """
        sel = Selection(part, num_parts, tuple(files))
        copies = self.workspace.cache.directory / "copies"
        if sel.whole and (copies / f"{self.id}.complete").exists():
            return str(copies / self.id)
        root = select_root(self.workspace.reader, self.record.root, sel)
        name = self.id if sel.whole else f"{self.id}-{root.hex()[:16]}"
        return str(shared_copy(self.workspace.reader, copies, name, root, progress))

    def get_mutable_local_copy(
        self, target_folder: str | os.PathLike[str], overwrite: bool = False,
        progress: Progress | None = None, part: int | None = None, num_parts: int | None = None,
        files: Sequence[str] = (),
    ) -> str:
        """A writable copy in `target_folder` (or a part, as get_local_copy); non-empty needs `overwrite`."""
        sel = Selection(part, num_parts, tuple(files))
        mutable_copy(self.workspace.reader, lambda: select_root(self.workspace.reader, self.record.root, sel),
                     Path(target_folder), overwrite, progress)
        return str(target_folder)

    def warm(
        self, paths: Iterable[str] = (), progress: Progress | None = None, workers: int = 16,
        on_total: Progress | None = None, dry_run: bool = False,
    ) -> warm_mod.WarmResult:
        """Fill the local cache with every object `paths` (files or folders; none: all) read; resumable."""
        return warm_mod.warm(self.workspace.reader, self.id, self.record.root, paths, workers=workers,
                             advance=progress, on_total=on_total, dry_run=dry_run)

    def verify_dataset_hash(self, local_copy_path: str | os.PathLike[str] | None = None,
                            skip_hash: bool = False, workers: int = 16) -> list[str]:
        """Re-hash what the store holds for this version, or (clearml's meaning) compare a local copy.

        With `local_copy_path`, the folder is checked against the version (by SHA-256, or by size
        with `skip_hash`): files missing, different or extra. Without it, damaged blocks are
        remembered on this machine (check/suspects.py), so that the next upload of a file holding
        them writes them again instead of trusting the store's copy.
        """
        if local_copy_path is not None:
            return compare_folder(self.workspace.reader, self.record.root, local_copy_path, skip_hash,
                                  workers).lines()
        problems = find_problems(self.workspace.store, self.workspace.reader, self.record, workers)
        self._suspects.update(add=(p.obj for p in problems if p.kind == "block" and p.obj is not None))
        return [str(p) for p in problems]

    def repair_dataset(self, folder: str | os.PathLike[str], workers: int = 16) -> RepairReport:
        """verify, then re-upload each missing or corrupt object from a good copy in `folder` (same paths)."""
        if not Path(folder).is_dir():
            raise UsageError(f"{folder}: not a folder")
        ws = self.workspace
        report = repair_version(ws.store, ws.reader, self.record, Path(folder), workers)
        still = {p.obj for p in report.remaining if p.kind == "block" and p.obj is not None}
        self._suspects.update(add=still, remove=report.fixed - still)
        return report

    def info(self) -> dict[str, Any]:
        """Everything about this version: its state, then its record's summary or what is staged."""
        fields = ("id", "project", "name", "version", "state", "tags", "description", "parents")
        d: dict[str, Any] = {k: getattr(self, k) for k in fields}
        d.update(created=self._state.created, author=self._state.author, updated=self._state.updated,
                 metadata=self.list_metadata())
        if self.state == "draft":
            d.update(stale=self.stale, stale_since=self.stale_since)
        if self.is_final:
            d.update(
                lineage=self.lineage(), **reading.summary(self.record), **reading.by_kind(self.changes())
            )
        else:
            d.update(staged_summary(self._journal().replay()))
        return d
