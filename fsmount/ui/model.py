"""What the pages show, read from the store through the CLI's API and cache; nothing is kept here."""

from __future__ import annotations

import time
from collections import deque
from dataclasses import dataclass
from typing import Any

from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.errors import FsmountError, NotFoundError
from fsmount.format.names import is_version_id
from fsmount.format.objects import DirEntry, Entry, Tree
from fsmount.format.records import READABLE_STATES, VersionRecord, VersionState
from fsmount.format.tree_edit import lookup
from fsmount.fs import control
from fsmount.fs.launcher import Mount

MAX_LINEAGE = 2000  # ancestors drawn at most; a longer history ends in a "more" marker


class PageNotFound(NotFoundError):
    """An unknown version, path or page: the app answers 404."""


@dataclass(slots=True)
class Group:
    """One dataset (project/name) and its versions, newest first."""

    project: str
    name: str
    versions: list[VersionState]


def when(t: float) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))


def matches(st: VersionState, q: str) -> bool:
    """The search box: a case-insensitive substring of the project, the name or a tag."""
    q = q.strip().lower()
    return not q or q in st.project.lower() or q in st.name.lower() or any(q in t.lower() for t in st.tags)


def datasets(ws: Workspace, q: str = "") -> list[Group]:
    """Projects and datasets (sorted), each with its versions newest first, filtered by `q`."""
    groups: dict[tuple[str, str], list[VersionState]] = {}
    for st in registry.list_states(ws.store):
        groups.setdefault((st.project, st.name), []).append(st)
    out = []
    for (project, name), states in sorted(groups.items()):
        hits = [s for s in states if matches(s, q)]
        if hits:
            out.append(Group(project, name, sorted(hits, key=lambda s: (s.created, s.id), reverse=True)))
    return out


def state_of(ws: Workspace, vid: str) -> VersionState:
    """The state of version `vid` (a full id), or PageNotFound."""
    if not is_version_id(vid):
        raise PageNotFound(f"{vid!r} is not a version id")
    try:
        return registry.read_state(ws.store, vid)
    except NotFoundError:
        raise PageNotFound(f"no version {vid}") from None


def record_of(ws: Workspace, st: VersionState) -> VersionRecord | None:
    """The record of a final or published version; None for drafts, aborted and failed ones."""
    return registry.readable_record(ws.reader, st) if st.state in READABLE_STATES else None  # repacked root


def readable(ws: Workspace, vid: str) -> tuple[VersionState, VersionRecord]:
    """State and record of a version whose files can be read, or PageNotFound."""
    st = state_of(ws, vid)
    rec = record_of(ws, st)
    if rec is None:
        raise PageNotFound(f"version {vid} is {st.state}: it has no files to show")
    return st, rec


def clean_path(path: str) -> list[str]:
    """A browser path as tree names: '', '.', '..' or a NUL anywhere is PageNotFound, never resolved."""
    parts = path.split("/") if path else []
    if parts and parts[-1] == "":
        parts.pop()  # one trailing slash, as a folder link has
    for p in parts:
        if p in ("", ".", "..") or "\0" in p:
            raise PageNotFound(f"{path!r}: not a path inside the version")
    return parts


def entry_at(ws: Workspace, root: bytes, parts: list[str]) -> Entry | None:
    """The entry at `parts` below `root` (None for the root itself); PageNotFound if it is not there."""
    if not parts:
        return None
    e = lookup(ws.reader.tree, root, "/".join(parts))
    if e is None:
        raise PageNotFound(f"{'/'.join(parts)}: no such path")
    return e


def tree_at(ws: Workspace, root: bytes, parts: list[str]) -> bytes:
    """The tree hash of the directory at `parts`; PageNotFound if it is a file or is missing."""
    e = entry_at(ws, root, parts)
    if e is None:
        return root
    if not isinstance(e, DirEntry):
        raise PageNotFound(f"{'/'.join(parts)}: not a directory")
    return e.tree


def slice_dir(tree: Tree, start: int, after: str | None, limit: int) -> tuple[int, list[Entry]]:
    """A page of a directory: from the first name after `after` (bisection) or from position `start`."""
    if after is not None:
        i = tree.index(after)
        start = i + 1 if i is not None else _bisect(tree, after)
    start = max(0, min(start, len(tree.entries)))
    return start, tree.entries[start:start + limit]


def _bisect(tree: Tree, name: str) -> int:
    lo, hi = 0, len(tree.entries)
    while lo < hi:
        mid = (lo + hi) // 2
        if tree.entries[mid].name < name:
            lo = mid + 1
        else:
            hi = mid
    return lo


@dataclass(slots=True)
class Node:
    """One version in a lineage graph."""

    id: str
    label: str
    parents: tuple[str, ...]
    readable: bool = True


def lineage_graph(ws: Workspace, vid: str, limit: int = MAX_LINEAGE) -> tuple[dict[str, Node], bool]:
    """The version and every ancestor up to the roots (records only), and whether `limit` cut it."""
    nodes: dict[str, Node] = {}
    queue = deque([vid])
    cut = False
    while queue:
        v = queue.popleft()
        if v in nodes:
            continue
        if len(nodes) >= limit:
            cut = True
            break
        try:
            rec = ws.reader.record(v)
        except FsmountError:
            nodes[v] = Node(v, v[:12], (), readable=False)
            continue
        nodes[v] = Node(v, f"{rec.name}@{rec.version}", rec.parents)
        queue.extend(rec.parents)
    for n in nodes.values():  # a cut graph keeps only edges between the nodes it has
        n.parents = tuple(p for p in n.parents if p in nodes)
    return nodes, cut


def mounts() -> list[dict[str, Any]]:
    """Live mounts on this host with their daemons' counters (as `fsmount status --json`)."""
    out = []
    for info in control.list_mounts():
        row = dict(info)
        try:
            row["status"] = Mount(str(info["mountpoint"]), int(info.get("pid", 0))).status()
        except (OSError, ValueError, FsmountError) as e:
            row["status"] = None
            row["error"] = str(e)
        out.append(row)
    return out
