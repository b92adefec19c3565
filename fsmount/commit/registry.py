"""Versions in a store: list, read and update state with conditional writes, resolve REFs."""

from __future__ import annotations

import hashlib
import logging
import random
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from typing import Protocol, TypeVar

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import (
    AmbiguousRefError,
    ConflictError,
    FormatError,
    NotFoundError,
    ObjectNotFound,
    PreconditionFailed,
    StateError,
)
from fsmount.format import names
from fsmount.format.hashing import state_key
from fsmount.format.names import RefKind, is_ascii_digits, is_version_id
from fsmount.format.records import READABLE_STATES, DatasetAlias, VersionRecord, VersionState
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

MAX_RETRIES = 16
ALIASES_PREFIX = "dataset-aliases/"
MAX_ALIAS_HOPS = 16


def read_state(store: ObjectStore, version_id: str) -> VersionState:
    try:
        data, etag = store.get_versioned(state_key(version_id))
    except ObjectNotFound:
        raise NotFoundError(f"no dataset version {version_id} in {store.url}") from None
    try:
        st = VersionState.decode(data, etag)
    except FormatError as e:
        raise FormatError(f"{state_key(version_id)}: {e}") from None
    if st.id != version_id:
        raise FormatError(f"{state_key(version_id)}: the state names another version ({st.id})")
    return st


def readable_record(reader: ObjectReader, state: VersionState) -> VersionRecord:
    """A final version's record as readers use it: after `gc --repack` its root is the state's
    (the same files, their bytes moved to new packs; docs/FORMAT.md §10, "Repacking")."""
    rec = reader.record(state.id)
    reader.tree_packs.add(rec.tree_packs)  # its trees in one GET when the first is missed
    return rec if state.root is None else replace(rec, root=state.root)


def content_root(reader: ObjectReader, version_id: str) -> bytes:
    """The root tree a final version's files are read from (the state's after a repack)."""
    return readable_record(reader, read_state(reader.store, version_id)).root


def create_state(store: ObjectStore, st: VersionState) -> VersionState:
    """Write a new version's state; its project, name, version and tags must follow FORMAT.md §7."""
    names.check_identity(st.project, st.name, st.version, st.tags)
    st.etag = store.put_conditional(state_key(st.id), st.encode(), if_match=None)
    return st


class Mutable(Protocol):
    """A mutable store object: read with its etag, written back only if unchanged (FORMAT.md §6)."""

    etag: str | None
    updated: float

    def encode(self) -> bytes: ...


M = TypeVar("M", bound=Mutable)


def read_modify_write(store: ObjectStore, key: str, read: Callable[[], M], change: Callable[[M], None],
                      busy: str) -> M:
    """Read, apply `change` (which may raise to refuse), write back if unchanged; on a lost race,
    back off, re-read and re-apply. After MAX_RETRIES lost races, ConflictError(`busy`): the
    caller is told to retry instead of anything being silently dropped."""
    for attempt in range(MAX_RETRIES):
        obj = read()
        etag = obj.etag
        change(obj)
        obj.updated = time.time()
        try:
            obj.etag = store.put_conditional(key, obj.encode(), if_match=etag)
            return obj
        except PreconditionFailed:
            log.debug("%s changed under us (attempt %d); retrying", key, attempt + 1)
            time.sleep(min(1.0, 0.01 * 2**attempt) * random.uniform(0.5, 1.5))
    raise ConflictError(busy)


def update_state(store: ObjectStore, version_id: str, change: Callable[[VersionState], None]) -> VersionState:
    """Read-modify-write a version's state; on a lost race, re-read and re-apply.

    `change` mutates the state it is given (and may raise to refuse). Two processes
    adding different tags at once both end up in place.
    """
    return read_modify_write(store, state_key(version_id), lambda: read_state(store, version_id), change,
                             f"version {version_id} is being changed by others; try again")


_warned: set[tuple[str, str]] = set()  # (store, key) of unreadable states this process has logged
_warned_lock = threading.Lock()


def _warn_once(store: ObjectStore, key: str, error: FormatError) -> None:
    """One warning per unreadable state and process (a command may list the states more than once)."""
    with _warned_lock:
        if (store.url, key) in _warned:
            return
        _warned.add((store.url, key))
    log.warning("skipping an unreadable version state: %s", error)  # the error names the key


def list_states(store: ObjectStore, workers: int = 32, *, strict: bool = False) -> list[VersionState]:
    """Every version's state in the store, drafts included, oldest first.

    Versions are the keys `state/<id>` exactly (FORMAT.md §2). A state that cannot be decoded
    (damaged, hostile, or from a newer format) is skipped with one warning naming its key, so one
    bad object does not take every other dataset down; `fsmount check` reports it. `strict`
    raises its FormatError instead: for callers that must see every version (gc).
    """
    ids = [k.removeprefix("state/") for k in (info.key for info in store.list("state/"))]
    ids = [i for i in ids if is_version_id(i)]

    def one(i: str) -> VersionState | None:
        try:
            return read_state(store, i)
        except NotFoundError:
            return None  # deleted while we listed
        except FormatError as e:
            if strict:
                raise
            _warn_once(store, state_key(i), e)
            return None

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(ids)))) as pool:
        states = [s for s in pool.map(one, ids) if s is not None]
    states.sort(key=lambda s: (s.created, s.id))
    return states


def _version_key(v: str) -> tuple[tuple[int, int | str], ...]:
    """Sort key for version strings: numeric parts numerically, '1.10.0' > '1.9.0'."""
    out: list[tuple[int, int | str]] = []
    for part in v.replace("-", ".").split("."):
        out.append((0, int(part)) if is_ascii_digits(part) else (1, part))
    return tuple(out)


def newest(states: Iterable[VersionState]) -> VersionState | None:
    """The newest by version string, then by creation time."""
    best = None
    for s in states:
        if best is None or (_version_key(s.version), s.created) > (_version_key(best.version), best.created):
            best = s
    return best


def select(
    states: Iterable[VersionState],
    project: str | None = None,
    name: str | None = None,
    tags: Iterable[str] | None = None,
    *,
    final_only: bool = False,
) -> list[VersionState]:
    """The states of `project`/`name` carrying every one of `tags` (each filter only when given)."""
    wanted = set(tags or ())
    return [
        s
        for s in states
        if (project is None or s.project == project)
        and (name is None or s.name == name)
        and wanted <= set(s.tags)
        and (not final_only or s.state in READABLE_STATES)
    ]


def resolve(
    store: ObjectStore,
    ref: str,
    *,
    project: str | None = None,
    require_final: bool = True,
    states: list[VersionState] | None = None,
) -> VersionState:
    """Turn a REF into one version's state.

    REF is a full id, a unique id prefix, PROJECT/NAME (newest final version),
    PROJECT/NAME@VERSION, or tag:T (newest final version with tag T, within
    `project` when given). `states`, when given, saves listing the store again.
    A REF that fits none of the forms of FORMAT.md §7 is a UsageError, before the store is asked.
    """
    parsed = names.parse_ref(ref)
    if project is not None:
        names.check_project(project)
    if parsed.kind is RefKind.ID:
        return _check_final(read_state(store, parsed.text), ref, require_final)
    if states is None:
        states = list_states(store)
    if parsed.kind is RefKind.TAG:
        return newest_tagged(states, [parsed.text], project)
    if parsed.kind is RefKind.PREFIX:
        return _by_prefix(states, parsed.text, require_final)
    return _by_name(store, states, parsed, require_final)


def newest_tagged(
    states: Iterable[VersionState], tags: Iterable[str], project: str | None = None
) -> VersionState:
    """The newest final version carrying every one of `tags` (within `project` when given)."""
    wanted = set(tags)
    found = newest(select(states, project, tags=wanted, final_only=True))
    if found is None:
        shown = ", ".join(repr(t) for t in sorted(wanted))
        where = f" in project {project!r}" if project else ""
        plural = "s" if len(wanted) > 1 else ""
        raise NotFoundError(f"no final dataset version carries tag{plural} {shown}{where}")
    return found


def _by_name(
    store: ObjectStore, states: list[VersionState], ref: names.Ref, require_final: bool
) -> VersionState:
    """PROJECT/NAME (the newest final version, else the newest draft) or PROJECT/NAME@VERSION."""
    path = f"{ref.project}/{ref.name}"
    same = [s for s in states if s.project == ref.project and s.name == ref.name]
    if not same:
        moved = renamed_to(store, states, ref.project, ref.name)
        if moved is not None:
            raise NotFoundError(f"dataset {path!r} was renamed to {moved[0] + '/' + moved[1]!r}")
        raise NotFoundError(f"no dataset named {path!r}")
    if ref.kind is RefKind.VERSION:
        same = [s for s in same if s.version == ref.version]
        if not same:
            raise NotFoundError(f"dataset {path!r} has no version {ref.version!r}")
        live = [s for s in same if s.state != "aborted"]
        if len(live) > 1:  # a store from before version strings were reserved (version-names/)
            ids = ", ".join(s.id for s in live)
            raise AmbiguousRefError(
                f"{path}@{ref.version} names {len(live)} versions ({ids}); give an id instead")
    final = [s for s in same if s.state in READABLE_STATES]
    if ref.kind is RefKind.VERSION:
        pick = newest(final) if require_final else newest(same)
        return pick if pick is not None else _check_final(same[-1], f"{path}@{ref.version}", require_final)
    pick = newest(final) if require_final or final else newest(same)
    if pick is None:
        raise StateError(f"dataset {path!r} has no final version yet")
    return pick


def _by_prefix(states: list[VersionState], prefix: str, require_final: bool) -> VersionState:
    """A unique prefix (4 ... 31 lowercase hex digits) of a version id."""
    hits = [s for s in states if s.id.startswith(prefix)]
    if len(hits) > 1:
        raise AmbiguousRefError(f"id prefix {prefix!r} is ambiguous: it matches {len(hits)} versions")
    if hits:
        return _check_final(hits[0], prefix, require_final)
    raise NotFoundError(f"no dataset version matches {prefix!r}")


def _check_final(st: VersionState, ref: str, require_final: bool) -> VersionState:
    if require_final and st.state not in READABLE_STATES:
        raise StateError(f"dataset version {ref} is {st.state}, not final")
    return st


# -- dataset aliases: where a renamed or moved dataset lives now (FORMAT.md §13) ------------------


def alias_key(project: str, name: str) -> str:
    """The key of the alias left behind by dataset `project`/`name` when it was renamed or moved."""
    h = hashlib.sha256("\0".join((project, name)).encode("utf-8", "surrogateescape")).hexdigest()
    return ALIASES_PREFIX + h


def read_alias(store: ObjectStore, project: str, name: str) -> DatasetAlias | None:
    """The alias of `project`/`name`, with its etag; None when the dataset was never renamed."""
    try:
        data, etag = store.get_versioned(alias_key(project, name))
    except (ObjectNotFound, NotFoundError):
        return None
    return DatasetAlias.decode(data, etag)


def renamed_to(
    store: ObjectStore, states: Iterable[VersionState], project: str, name: str
) -> tuple[str, str] | None:
    """The name a dataset that has no versions under `project`/`name` was renamed to, if any.

    Aliases are followed (a dataset renamed twice) until a name that has versions; a name that
    has versions is never redirected. An alias is only a hint: a chain that ends nowhere (or in
    a loop) is no rename.
    """
    live = {(s.project, s.name) for s in states}
    seen = {(project, name)}
    at = (project, name)
    for _ in range(MAX_ALIAS_HOPS):
        try:
            alias = read_alias(store, *at)
        except FormatError as e:
            _warn_once(store, alias_key(*at), e)
            return None
        if alias is None:
            return None
        at = (alias.project, alias.name)
        if at in live:
            return at
        if at in seen:
            return None
        seen.add(at)
    return None
