"""The catalogue of a store: find and search versions, squash, rename and move, delete whole datasets.

What Dataset's class-level methods (get, list_datasets, squash, rename, move_to_project) do, with
clearml.Dataset's meanings; they return states or plain dicts, and the facade wraps them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsmount.api.workspace import Workspace
from fsmount.commit import aliases, lifecycle, registry
from fsmount.commit import gc as gc_mod
from fsmount.commit import squash as squash_mod
from fsmount.commit.drafts import Drafts
from fsmount.errors import FsmountError, StateError, UsageError
from fsmount.format import names
from fsmount.format.names import RefKind
from fsmount.format.records import READABLE_STATES, VersionRecord, VersionState


def find(
    ws: Workspace,
    ref: str | None,
    *,
    project: str | None = None,
    tags: list[str] | None = None,
    only_final: bool = True,
    only_published: bool = False,
) -> VersionState:
    """One version by REF (or, without one, the newest final version carrying every tag).

    `only_published`: PROJECT/NAME and tag:T mean the newest *published* version; an id or
    @VERSION naming a version that is not published is refused.
    """
    if ref is None:
        if not tags:
            raise UsageError("give a dataset id, a project and name, tags, or a REF")
        pool = registry.list_states(ws.store)
        if only_published:
            pool = [s for s in pool if s.state == "published"]
        return registry.newest_tagged(pool, tags, project)
    st = registry.resolve(ws.store, ref, project=project, require_final=only_final or only_published)
    if not only_published or st.state == "published":
        return st
    parsed = names.parse_ref(ref)
    states = registry.list_states(ws.store)
    published = [s for s in states if s.state == "published"]
    if parsed.kind is RefKind.TAG:
        return registry.newest_tagged(published, [parsed.text], project)
    if parsed.kind is RefKind.DATASET:
        pick = registry.newest(registry.select(published, st.project, st.name))
        if pick is None:
            raise StateError(f"dataset {st.project}/{st.name!r} has no published version")
        return pick
    raise StateError(f"dataset version {ref} is {st.state}, not published")


def ref_of(
    dataset_id: str | None, project: str | None, name: str | None, version: str | None
) -> str | None:
    """clearml's way of naming a version (id, or project + name [+ version]) as a REF."""
    if dataset_id:
        return dataset_id
    if project and name:
        return f"{project}/{name}" + (f"@{version}" if version else "")
    return None


def select_versions(
    ws: Workspace,
    project: str | None = None,
    name: str | None = None,
    tags: Iterable[str] | None = None,
    *,
    include_drafts: bool = True,
) -> list[VersionState]:
    """The states of `project`/`name` (exact) with every tag; drafts too unless told otherwise."""
    return registry.select(registry.list_states(ws.store), project, name, tags, final_only=not include_drafts)


def search(
    ws: Workspace,
    dataset_project: str | None = None,
    partial_name: str | None = None,
    tags: Iterable[str] | None = None,
    ids: Iterable[str] | None = None,
    only_completed: bool = True,
    recursive_project_search: bool = True,
) -> list[dict[str, Any]]:
    """clearml's Dataset.list_datasets: one dict per version (id, project, name, version, state,
    tags, created, files, bytes), oldest first.

    `dataset_project` includes its subprojects unless `recursive_project_search` is off;
    `partial_name` is a regular expression searched in the name; `ids` are ids or id prefixes;
    every tag must be present; `only_completed` keeps final and published versions only.
    """
    try:
        pattern = re.compile(partial_name) if partial_name else None
    except (re.error, OverflowError, RecursionError, ValueError) as e:  # "a{99999999999}": OverflowError
        raise UsageError(f"invalid name pattern {partial_name!r}: {e}") from None
    wanted_ids = list(ids or ())
    wanted_tags = set(tags or ())
    out = []
    for s in registry.list_states(ws.store):
        if dataset_project is not None and not (
            s.project == dataset_project
            or (recursive_project_search and s.project.startswith(dataset_project + "/"))
        ):
            continue
        if pattern is not None and not pattern.search(s.name):
            continue
        if wanted_ids and not any(s.id.startswith(i) for i in wanted_ids):
            continue
        if not wanted_tags <= set(s.tags) or (only_completed and s.state not in READABLE_STATES):
            continue
        out.append(s)
    records = _records(ws, [s for s in out if s.state in READABLE_STATES])
    return [_row(s, records.get(s.id)) for s in out]


def _records(ws: Workspace, states: list[VersionState]) -> dict[str, VersionRecord]:
    def one(s: VersionState) -> tuple[str, VersionRecord | None]:
        try:
            return s.id, ws.reader.record(s.id)
        except FsmountError:
            return s.id, None  # listed without totals; `fsmount check` reports the record

    with ThreadPoolExecutor(max(1, min(16, len(states)))) as pool:
        return {i: r for i, r in pool.map(one, states) if r is not None}


def _row(s: VersionState, rec: VersionRecord | None) -> dict[str, Any]:
    return {
        "id": s.id, "project": s.project, "name": s.name, "version": s.version, "state": s.state,
        "tags": sorted(s.tags), "created": s.created,
        "files": rec.files if rec else None, "bytes": rec.nbytes if rec else None,
    }


def squash(
    ws: Workspace,
    dataset_name: str,
    dataset_ids: list[str],
    dataset_project: str | None = None,
    dataset_version: str | None = None,
    message: str = "",
) -> VersionState:
    """A new standalone final version: the given versions (REFs) merged in order, later winning."""
    sources = squash_mod.resolve_sources(ws.store, dataset_ids)
    project = dataset_project or sources[0].project
    record = squash_mod.squash(
        ws.store, ws.reader, Drafts(ws.data_home, ws.store_url), sources,
        project=project, name=dataset_name, version=dataset_version, message=message,
    )
    return registry.read_state(ws.store, record.id)


def rename(ws: Workspace, project: str, name: str, new_project: str, new_name: str) -> aliases.RenameResult:
    return aliases.rename_dataset(ws.store, project, name, new_project, new_name)


def delete_dataset(ws: Workspace, project: str, name: str, force: bool = False) -> dict[str, Any]:
    """Delete every version of a dataset, then count what gc may now remove (a dry run, grace 0)."""
    gone = lifecycle.delete_dataset(ws.store, project, name, force=force)
    drafts = Drafts(ws.data_home, ws.store_url)
    for st in gone:
        drafts.closed(st.id)
    out: dict[str, Any] = {"project": project, "name": name, "deleted": [s.id for s in gone]}
    try:
        res = gc_mod.gc(ws.store, ws.reader, grace=0, dry_run=True)
        out.update(unreachable_objects=res["deleted"], unreachable_bytes=res["bytes_freed"])
    except FsmountError as e:  # a writer holds its lock, an unreadable state: the delete is done anyway
        out.update(unreachable_objects=None, unreachable_bytes=None, gc_note=str(e))
    return out
