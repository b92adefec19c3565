"""What may happen to a version after it is made: publish, abort, tags, description, delete."""

from __future__ import annotations

from collections.abc import Iterable

from fsmount.commit import attachments, registry
from fsmount.commit.drafts import release_version
from fsmount.errors import NotFoundError, StateError
from fsmount.format import names
from fsmount.format.hashing import record_key, state_key
from fsmount.format.records import VersionState
from fsmount.store.base import ObjectStore


def publish(store: ObjectStore, version_id: str) -> VersionState:
    """final -> published; anything else is refused."""

    def change(st: VersionState) -> None:
        if st.state == "published":
            raise StateError(f"dataset version {st.id} is already published")
        if st.state != "final":
            raise StateError(f"dataset version {st.id} is {st.state}: only a final version can be published")
        st.state = "published"

    return registry.update_state(store, version_id, change)


def abort(store: ObjectStore, version_id: str) -> VersionState:
    """draft -> aborted: it stays listed; its uploaded blocks become garbage."""

    def change(st: VersionState) -> None:
        if st.state != "draft":
            raise StateError(f"dataset version {st.id} is {st.state}, not a draft")
        st.state = "aborted"

    st = registry.update_state(store, version_id, change)
    release_version(store, st)  # an aborted draft's version string may be given again
    return st


def add_tags(store: ObjectStore, version_id: str, tags: Iterable[str]) -> VersionState:
    new = {names.check_tag(t) for t in tags}
    return registry.update_state(store, version_id, lambda st: setattr(st, "tags", tuple(set(st.tags) | new)))


def remove_tags(store: ObjectStore, version_id: str, tags: Iterable[str]) -> VersionState:
    gone = set(tags)  # not checked: a tag an older fsmount let in must stay removable
    return registry.update_state(
        store, version_id, lambda st: setattr(st, "tags", tuple(set(st.tags) - gone))
    )


def set_description(store: ObjectStore, version_id: str, description: str) -> VersionState:
    return registry.update_state(store, version_id, lambda st: setattr(st, "description", description))


def delete(store: ObjectStore, version_id: str, force: bool = False) -> None:
    """Remove a version's state and record; refused while another version has it as parent.

    The parent check must see every version: an unreadable state (it may be a child) stops the
    delete with its key named, unless `force`."""
    states = registry.list_states(store, strict=not force)
    children = [s for s in states if version_id in s.parents]
    if children and not force:
        names = ", ".join(c.id[:12] for c in children[:3])
        raise StateError(
            f"dataset version {version_id} is a parent of {len(children)} version(s) ({names});"
            " use --force to delete it anyway"
        )
    for st in states:
        if st.id == version_id:
            release_version(store, st)  # first: the state still names the version meanwhile
    _remove(store, version_id)


def _remove(store: ObjectStore, version_id: str) -> None:
    store.delete(state_key(version_id))
    store.delete(record_key(version_id))
    attachments.delete_index(store, version_id)


def delete_dataset(store: ObjectStore, project: str, name: str, force: bool = False) -> list[VersionState]:
    """Remove every version of `project`/`name` (refused while a version of another dataset has one
    of them as parent, unless `force`); returns the versions removed."""
    names.check_project(project)
    names.check_name(name)
    states = registry.list_states(store, strict=not force)
    mine = [s for s in states if (s.project, s.name) == (project, name)]
    if not mine:
        moved = registry.renamed_to(store, states, project, name)
        where = f": it was renamed to {moved[0]}/{moved[1]}" if moved else ""
        raise NotFoundError(f"no dataset named {project + '/' + name!r}{where}")
    ids = {s.id for s in mine}
    children = [s for s in states if s.id not in ids and ids & set(s.parents)]
    if children and not force:
        shown = ", ".join(f"{c.project}/{c.name}@{c.version}" for c in children[:3])
        raise StateError(
            f"{len(children)} version(s) of other datasets have versions of {project}/{name} as parent"
            f" ({shown}); use --force to delete it anyway"
        )
    for st in mine:
        release_version(store, st)
        _remove(store, st.id)
    return mine
