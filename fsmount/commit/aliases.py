"""Rename and move a dataset (all its versions): an alias object first, then each state, conditionally.

Records are immutable, so a dataset's current project and name live in its versions' states
(changed here with the same conditional read-modify-write as tags and publish, so a concurrent
tag or publish is re-applied, never lost). The alias `dataset-aliases/<h(old)>` is written
first: it claims the rename (two renames of one dataset cannot both win it), lists the ids it
moves (so a rename cut short is finished by running it again) and lets a REF by the old name
say where the dataset went. FORMAT.md §13.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, replace

from fsmount.commit import registry
from fsmount.commit.drafts import release_version, reserve_version
from fsmount.errors import ConflictError, NotFoundError, PreconditionFailed, UsageError
from fsmount.format import names
from fsmount.format.records import DatasetAlias, VersionState
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class RenameResult:
    old: tuple[str, str]
    new: tuple[str, str]
    ids: tuple[str, ...]  # every version now under the new name


def rename_dataset(
    store: ObjectStore, project: str, name: str, new_project: str, new_name: str
) -> RenameResult:
    """Give every version of `project`/`name` the project `new_project` and the name `new_name`.

    Refused (nothing written) when the dataset has no versions, or the new name is another
    dataset's. Version strings are reserved under the new name before any state changes.
    """
    names.check_project(project)
    names.check_name(name)
    names.check_project(new_project)
    names.check_name(new_name)
    old, new = (project, name), (new_project, new_name)
    if old == new:
        raise UsageError(f"{project}/{name} already has that project and name")
    states = registry.list_states(store)
    mine = [s for s in states if (s.project, s.name) == old]
    if not mine:
        moved = registry.renamed_to(store, states, project, name)
        where = f": it was renamed to {moved[0]}/{moved[1]}" if moved else ""
        raise NotFoundError(f"no dataset named {project + '/' + name!r}{where}")
    alias = registry.read_alias(store, project, name)
    resuming = alias is not None and (alias.project, alias.name) == new
    moved_before = set(alias.ids) if resuming and alias is not None else set()
    others = [s for s in states if (s.project, s.name) == new and s.id not in moved_before]
    if others:
        raise ConflictError(
            f"dataset {new_project}/{new_name} exists already ({len(others)} versions); choose another name"
        )
    ids = tuple(sorted({s.id for s in mine} | moved_before))
    previous = _claim(store, project, name, alias, DatasetAlias(new_project, new_name, ids, time.time()))
    reserved = _reserve(store, mine, new)
    if isinstance(reserved, str):
        _unclaim(store, project, name, previous)
        raise ConflictError(
            f"version {reserved} of {new_project}/{new_name} was taken meanwhile; choose another name")
    for st in mine:
        _move_state(store, st.id, old, new)
        release_version(store, st)  # the old name's reservation, only while it names this id
    log.info("renamed %s/%s to %s/%s (%d versions)", project, name, new_project, new_name, len(mine))
    return RenameResult(old, new, ids)


def _claim(
    store: ObjectStore, project: str, name: str, alias: DatasetAlias | None, wanted: DatasetAlias
) -> DatasetAlias | None:
    """Write the alias (create-if-absent, or update-if-unchanged over an older one); returns the old one."""
    key = registry.alias_key(project, name)
    try:
        store.put_conditional(key, wanted.encode(), if_match=alias.etag if alias else None)
    except PreconditionFailed:
        raise ConflictError(
            f"dataset {project}/{name} is being renamed or moved by another process; try again"
        ) from None
    return alias


def _unclaim(store: ObjectStore, project: str, name: str, previous: DatasetAlias | None) -> None:
    """Undo _claim after a refused rename: the old alias back, or none."""
    key = registry.alias_key(project, name)
    if previous is None:
        store.delete(key)
        return
    try:
        _, etag = store.get_versioned(key)
        store.put_conditional(key, previous.encode(), if_match=etag)
    except (PreconditionFailed, NotFoundError) as e:
        log.warning("could not restore the alias of %s/%s: %s", project, name, e)


def _reserve(store: ObjectStore, states: list[VersionState], new: tuple[str, str]) -> list[str] | str:
    """Reserve each live version's string under the new name; on a clash release them, return it."""
    done: list[VersionState] = []
    for st in states:
        if st.state == "aborted":
            continue  # an aborted version holds no string
        holder = reserve_version(store, new[0], new[1], st.version, st.id)
        if holder is not None:
            for d in done:
                release_version(store, replace(d, project=new[0], name=new[1]))
            return st.version
        done.append(st)
    return [s.id for s in done]


def _move_state(store: ObjectStore, version_id: str, old: tuple[str, str], new: tuple[str, str]) -> None:
    """Conditional update of one state's project and name (left alone if it moved elsewhere meanwhile)."""

    def change(st: VersionState) -> None:
        if (st.project, st.name) == old:
            st.project, st.name = new

    try:
        registry.update_state(store, version_id, change)
    except NotFoundError:
        log.info("version %s was deleted during the rename", version_id)
