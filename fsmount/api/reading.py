"""Reading final versions: entries under a path, changes between trees, lineage, a record's summary."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from typing import Any

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import FsmountError, NotFoundError
from fsmount.format.objects import DirEntry, Entry
from fsmount.format.records import VersionRecord
from fsmount.format.tree_edit import Change, diff_trees, lookup, split_path, walk_tree

CHANGE_KINDS = ("added", "modified", "removed")


def entries_under(
    reader: ObjectReader, root: bytes, dataset_path: str | None, where: str
) -> Iterator[tuple[str, Entry]]:
    """(path, entry) of everything under `dataset_path` of the tree `root` (the entry itself for a file)."""
    prefix = "/".join(split_path(dataset_path or ""))
    if prefix:
        e = lookup(reader.tree, root, prefix)
        if e is None:
            raise NotFoundError(f"{dataset_path}: no such path in {where}")
        if not isinstance(e, DirEntry):
            yield prefix, e
            return
        root = e.tree
        prefix += "/"
    yield from walk_tree(reader.tree, root, prefix)


def changes(reader: ObjectReader, old: bytes, new: bytes) -> list[Change]:
    """Files and symlinks added, modified and removed from tree `old` to tree `new`."""
    return list(diff_trees(reader.tree, old, new))


def by_kind(changes: list[Change]) -> dict[str, list[str]]:
    """{'added': paths, 'modified': paths, 'removed': paths}."""
    return {kind: [c.path for c in changes if c.kind == kind] for kind in CHANGE_KINDS}


def summary(record: VersionRecord) -> dict[str, Any]:
    """A record's totals and words, as `info` shows them."""
    return {
        "files": record.files,
        "bytes": record.nbytes,
        "message": record.message,
        "finalized": record.finalized,
        "block_size": record.block_size,
    }


def lineage(reader: ObjectReader, version_id: str) -> list[str]:
    """The version and every ancestor, breadth first, each once; unreadable records end a branch."""
    out: list[str] = []
    queue, seen = deque([version_id]), set()
    while queue:
        vid = queue.popleft()
        if vid in seen:
            continue
        seen.add(vid)
        out.append(vid)
        try:
            queue.extend(reader.record(vid).parents)
        except FsmountError:
            continue
    return out
