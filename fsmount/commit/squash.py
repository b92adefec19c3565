"""Squash: one standalone version (no parents) whose tree is several final versions merged in order.

The merge is FORMAT.md §9's merge of parents (later wins, nothing removed); the result's entries
keep their blocks and origins, so squashing writes only the merged trees, the record and the
state: no data block is read or written. It goes through finalize like every new version.
"""

from __future__ import annotations

import logging

from fsmount.cache.fetcher import ObjectReader
from fsmount.commit import lifecycle, registry
from fsmount.commit.close import writing
from fsmount.commit.drafts import Drafts, check_names
from fsmount.commit.finalize import ChangeSet, TreeUploader, finalize, merged_base
from fsmount.errors import StateError, UsageError
from fsmount.format.objects import DirEntry
from fsmount.format.records import READABLE_STATES, VersionRecord, VersionState
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)


def resolve_sources(store: ObjectStore, refs: list[str]) -> list[VersionState]:
    """The versions to squash, in order; each must be final or published, none twice."""
    if len(refs) < 1:
        raise UsageError("squash needs at least one version")
    states = registry.list_states(store)
    found = [registry.resolve(store, r, require_final=False, states=states) for r in refs]
    for r, st in zip(refs, found, strict=True):
        if st.state not in READABLE_STATES:
            raise StateError(f"cannot squash {r}: dataset version {st.id} is {st.state}, not final")
    if len({s.id for s in found}) != len(found):
        raise UsageError("the same version is given twice")
    return found


def squash(
    store: ObjectStore,
    reader: ObjectReader,
    drafts: Drafts,
    sources: list[VersionState],
    *,
    project: str,
    name: str,
    version: str | None = None,
    message: str = "",
) -> VersionRecord:
    """Make the squash of `sources` (final versions, merged in order) a new final version."""
    check_names(project, name)
    ids = [s.id for s in sources]
    block_size = reader.record(ids[0]).block_size
    st = drafts.create(store, project, name, [], version=version)  # no journal: nothing is staged
    try:
        with writing(store, st.id) as lock:
            trees = TreeUploader(store, reader)
            merged = merged_base(reader, ids, trees)
            trees.flush()  # the merged subtrees: finalize grafts them under the new root
            record = finalize(
                store, reader, st, _top_level(reader, merged), block_size=block_size,
                message=message or "squash of " + ", ".join(ids), lock=lock,
            )
    except BaseException:
        log.info("squash into %s failed; aborting draft %s", f"{project}/{name}", st.id)
        try:
            lifecycle.abort(store, st.id)
        except Exception as e:  # the failure that brought us here is what the user needs to see
            log.warning("could not abort draft %s: %s", st.id, e)
        raise
    return record


def _top_level(reader: ObjectReader, root: bytes) -> ChangeSet:
    """A change-set that, applied to the empty tree, gives `root`: its top-level entries as they are."""
    cs = ChangeSet()
    for e in reader.tree(root).entries:
        if isinstance(e, DirEntry):
            cs.grafts[e.name] = e
        else:
            cs.puts[e.name] = e
    return cs
