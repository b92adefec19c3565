"""Edit a Merkle tree by path, merge trees (later wins), diff trees, and write back only what changed."""

from __future__ import annotations

import fnmatch
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from fsmount.errors import UsageError
from fsmount.format.objects import (
    EMPTY_TREE_HASH,
    DirEntry,
    Entry,
    FileEntry,
    LinkEntry,
    SymlinkEntry,
    Tree,
    tree_object,
    validate_name,
)

TreeLoader = Callable[[bytes], Tree]
TreeWriter = Callable[[bytes, bytes], None]  # (hash, encoded bytes)

DEFAULT_DIR_MODE = 0o755


def split_path(path: str) -> list[str]:
    """'a/b/c' -> ['a', 'b', 'c']; rejects '..' and empty parts; '' or '/' is the root."""
    parts = [p for p in path.strip("/").split("/") if p and p != "."]
    for p in parts:
        if p == "..":
            raise UsageError(f"path {path!r} may not contain '..'")
    return parts


class DirNode:
    """A directory being edited. Its entries load lazily from the tree it started as."""

    __slots__ = ("_entries", "dirty", "mode", "mtime_ns", "orig")

    def __init__(self, orig: bytes | None, mode: int, mtime_ns: int) -> None:
        self.orig = orig  # hash it was loaded from; None for a new directory
        self.mode = mode
        self.mtime_ns = mtime_ns
        self.dirty = orig is None
        self._entries: dict[str, Entry | DirNode] | None = None if orig else {}

    def entries(self, load: TreeLoader) -> dict[str, Entry | DirNode]:
        if self._entries is None:
            assert self.orig is not None
            self._entries = {e.name: e for e in load(self.orig).entries}
        return self._entries

    @classmethod
    def from_entry(cls, e: DirEntry) -> DirNode:
        return cls(e.tree, e.mode, e.mtime_ns)


_Chain = tuple[DirNode, "_Chain | None"]  # a directory and its parents, innermost first


@dataclass(slots=True)
class TreeStats:
    files: int
    bytes: int


class TreeEditor:
    """Path-level edits over a stored tree; `write()` stores only the directories that changed."""

    def __init__(self, load: TreeLoader, root: bytes = EMPTY_TREE_HASH) -> None:
        self.load = load
        self.root = (
            DirNode(root, DEFAULT_DIR_MODE, 0)
            if root != EMPTY_TREE_HASH
            else DirNode(None, DEFAULT_DIR_MODE, 0)
        )
        if root == EMPTY_TREE_HASH:
            self.root.dirty = False

    # -- navigation ---------------------------------------------------------------

    def _child_dir(self, node: DirNode, name: str, create: bool) -> DirNode | None:
        entries = node.entries(self.load)
        child = entries.get(name)
        if isinstance(child, DirNode):
            return child
        if isinstance(child, DirEntry):
            sub = DirNode.from_entry(child)
            entries[name] = sub
            return sub
        if not create:
            return None
        sub = DirNode(None, DEFAULT_DIR_MODE, time.time_ns())
        entries[name] = sub  # replaces a file or symlink of that name: the newer change wins
        node.dirty = True
        return sub

    def _walk_to(self, parts: list[str], create: bool) -> list[DirNode] | None:
        chain = [self.root]
        for name in parts:
            child = self._child_dir(chain[-1], name, create)
            if child is None:
                return None
            chain.append(child)
        return chain

    @staticmethod
    def _mark(chain: list[DirNode]) -> None:
        for n in chain:
            n.dirty = True

    def get(self, path: str) -> Entry | DirNode | None:
        parts = split_path(path)
        if not parts:
            return self.root
        chain = self._walk_to(parts[:-1], create=False)
        if chain is None:
            return None
        return chain[-1].entries(self.load).get(parts[-1])

    # -- edits -------------------------------------------------------------------

    def put(self, path: str, entry: FileEntry | SymlinkEntry | LinkEntry) -> None:
        """Place a file or symlink at `path`, making parent directories as needed."""
        parts = split_path(path)
        if not parts:
            raise UsageError("cannot replace the dataset root with a file")
        validate_name(parts[-1])
        chain = self._walk_to(parts[:-1], create=True)
        assert chain is not None
        chain[-1].entries(self.load)[parts[-1]] = entry
        self._mark(chain)

    def mkdir(self, path: str, mode: int = DEFAULT_DIR_MODE, mtime_ns: int | None = None) -> DirNode:
        parts = split_path(path)
        chain = self._walk_to(parts, create=True)
        assert chain is not None
        node = chain[-1]
        if node.orig is None:
            node.mode = mode
            if mtime_ns is not None:
                node.mtime_ns = mtime_ns
        self._mark(chain)
        return node

    def graft(self, path: str, entry: DirEntry) -> None:
        """Place a stored directory at `path` (replacing whatever was there), named after `path`.

        An empty tree becomes a new directory, so that its (empty) tree object gets written.
        """
        parts = split_path(path)
        if not parts:
            raise UsageError("cannot replace the dataset root with a subtree")
        validate_name(parts[-1])
        chain = self._walk_to(parts[:-1], create=True)
        assert chain is not None
        if entry.tree == EMPTY_TREE_HASH:
            chain[-1].entries(self.load)[parts[-1]] = DirNode(None, entry.mode, entry.mtime_ns)
        else:
            chain[-1].entries(self.load)[parts[-1]] = DirEntry(
                parts[-1], entry.mode, entry.mtime_ns, entry.tree, entry.nfiles, entry.nbytes)
        self._mark(chain)

    def set_dir_attrs(self, path: str, mode: int, mtime_ns: int) -> None:
        """Set the mode and mtime of the directory at `path`, making it (and parents) if needed."""
        node = self.mkdir(path, mode, mtime_ns)
        if (node.mode, node.mtime_ns) != (mode, mtime_ns):
            node.mode, node.mtime_ns = mode, mtime_ns
            node.dirty = True

    def remove(self, path: str) -> bool:
        """Remove a file, symlink or whole directory; False if nothing was there."""
        parts = split_path(path)
        if not parts:
            raise UsageError("cannot remove the dataset root")
        chain = self._walk_to(parts[:-1], create=False)
        if chain is None:
            return False
        entries = chain[-1].entries(self.load)
        if parts[-1] not in entries:
            return False
        del entries[parts[-1]]
        self._mark(chain)
        return True

    def remove_matching(self, pattern: str) -> list[str]:
        """Remove every path matching a glob ('*.jpg', 'train/**', 'a/b.txt'); returns them."""
        pattern = pattern.strip("/")
        if not any(c in pattern for c in "*?["):
            return [pattern] if self.remove(pattern) else []
        matched = [p for p, _ in self.iter_paths() if _glob_match(p, pattern)]
        removed: list[str] = []
        for p in matched:
            if any(p.startswith(r + "/") for r in removed):
                continue
            if self.remove(p):
                removed.append(p)
        return removed

    def overlay(self, tree: bytes) -> None:
        """Merge a stored tree on top of this one: on the same path the overlay wins.

        Iterative (an explicit stack): a tree thousands of levels deep must not hit Python's
        recursion limit. Each pending directory carries its chain of parents as a linked list.
        """
        todo: list[tuple[DirNode, bytes, _Chain]] = [(self.root, tree, (self.root, None))]
        while todo:
            node, tree, chain = todo.pop()
            if node.orig == tree and not node.dirty:
                continue
            entries = node.entries(self.load)
            changed = False
            for e in self.load(tree).entries:
                mine = entries.get(e.name)
                if isinstance(e, DirEntry) and isinstance(mine, DirEntry | DirNode):
                    if isinstance(mine, DirEntry) and mine.tree == e.tree:
                        continue
                    sub = mine if isinstance(mine, DirNode) else DirNode.from_entry(mine)
                    entries[e.name] = sub
                    todo.append((sub, e.tree, (sub, chain)))
                    continue
                if mine != e:
                    entries[e.name] = e
                    changed = True
            if changed:
                link: _Chain | None = chain
                while link is not None:
                    link[0].dirty = True
                    link = link[1]

    # -- reading back -------------------------------------------------------------------

    def iter_paths(
        self, node: DirNode | None = None, prefix: str = ""
    ) -> Iterator[tuple[str, Entry | DirNode]]:
        """Every path below `node` (directories before their contents); iterative, any depth."""
        start = node or self.root
        stack = [(start, prefix, iter(sorted(start.entries(self.load).items())))]
        while stack:
            parent, pre, items = stack[-1]
            item = next(items, None)
            if item is None:
                stack.pop()
                continue
            name, e = item
            path = f"{pre}{name}"
            if isinstance(e, DirEntry):
                e = self._child_dir(parent, name, create=False) or e
            yield path, e
            if isinstance(e, DirNode):
                stack.append((e, path + "/", iter(sorted(e.entries(self.load).items()))))

    def write(self, store_tree: TreeWriter) -> tuple[bytes, TreeStats]:
        """Store every changed directory, bottom up; return the root hash and totals.

        Post-order with an explicit stack (no recursion): each frame is a directory being written,
        the name it has in its parent, its remaining entries and the entries written so far.
        """
        if not self.root.dirty and self.root.orig is not None:
            return self._clean(self.root)
        stack: list[tuple[DirNode, str, Iterator[tuple[str, Entry | DirNode]], list[Entry]]] = [
            (self.root, "", iter(list(self.root.entries(self.load).items())), [])]
        while True:
            node, name_in_parent, items, out = stack[-1]
            pushed = False
            for name, e in items:
                if not isinstance(e, DirNode):
                    out.append(e)
                elif not e.dirty and e.orig is not None:
                    h, st = self._clean(e)
                    out.append(DirEntry(name, e.mode, e.mtime_ns, h, st.files, st.bytes))
                else:
                    stack.append((e, name, iter(list(e.entries(self.load).items())), []))
                    pushed = True
                    break
            if pushed:
                continue
            h, data = tree_object(out)
            store_tree(h, data)
            node.orig, node.dirty = h, False
            t = Tree(out)  # unsorted: only for its totals
            stack.pop()
            if not stack:
                return h, TreeStats(t.nfiles, t.nbytes)
            stack[-1][3].append(DirEntry(name_in_parent, node.mode, node.mtime_ns, h, t.nfiles, t.nbytes))

    def _clean(self, node: DirNode) -> tuple[bytes, TreeStats]:
        assert node.orig is not None
        t = self.load(node.orig)
        return node.orig, TreeStats(t.nfiles, t.nbytes)


def _glob_match(path: str, pattern: str) -> bool:
    """fnmatch on the whole path, or on the basename for a pattern without '/' (like clearml-data)."""
    if fnmatch.fnmatchcase(path, pattern):
        return True
    if "/" not in pattern:
        return fnmatch.fnmatchcase(path.rsplit("/", 1)[-1], pattern)
    if pattern.endswith("/**"):
        return path.startswith(pattern[:-3] + "/")
    return False


# -- diff -----------------------------------------------------------------------------


@dataclass(slots=True, frozen=True)
class Change:
    """One difference between two trees: 'added', 'modified' or 'removed' at `path`."""

    kind: str
    path: str
    old: Entry | None
    new: Entry | None


def diff_trees(load: TreeLoader, old: bytes, new: bytes, prefix: str = "") -> Iterator[Change]:
    """Files and symlinks that differ from `old` to `new`; equal subtrees are skipped unread.

    Iterative (an explicit stack of directory pairs being compared), so depth is not limited by
    Python's recursion limit; the order is the recursive one (names sorted, depth first).
    """
    if old == new:
        return
    stack = [_pair(load, old, new, prefix)]
    while stack:
        pre, names, a, b = stack[-1]
        name = next(names, None)
        if name is None:
            stack.pop()
            continue
        ea, eb = a.get(name), b.get(name)
        path = pre + name
        if isinstance(ea, DirEntry) and isinstance(eb, DirEntry):
            if ea.tree != eb.tree:
                stack.append(_pair(load, ea.tree, eb.tree, path + "/"))
            continue
        if isinstance(ea, DirEntry):
            yield from _all(load, ea.tree, path + "/", "removed")
            ea = None
        if isinstance(eb, DirEntry):
            yield from _all(load, eb.tree, path + "/", "added")
            eb = None
        if ea is None and eb is None:
            continue
        if ea is None:
            yield Change("added", path, None, eb)
        elif eb is None:
            yield Change("removed", path, ea, None)
        elif not ea.same_content(eb):
            yield Change("modified", path, ea, eb)


def _pair(
    load: TreeLoader, old: bytes, new: bytes, prefix: str
) -> tuple[str, Iterator[str], dict[str, Entry], dict[str, Entry]]:
    a = {e.name: e for e in load(old).entries}
    b = {e.name: e for e in load(new).entries}
    return prefix, iter(sorted(a.keys() | b.keys())), a, b


def _all(load: TreeLoader, tree: bytes, prefix: str, kind: str) -> Iterator[Change]:
    for path, e in walk_tree(load, tree, prefix):
        if not isinstance(e, DirEntry):
            yield Change(kind, path, e if kind == "removed" else None, e if kind == "added" else None)


def walk_tree(load: TreeLoader, tree: bytes, prefix: str = "") -> Iterator[tuple[str, Entry]]:
    """Every (path, entry) of a stored tree, depth first, directories before contents; iterative."""
    stack = [(prefix, iter(load(tree).entries))]
    while stack:
        pre, entries = stack[-1]
        e = next(entries, None)
        if e is None:
            stack.pop()
            continue
        path = pre + e.name
        yield path, e
        if isinstance(e, DirEntry):
            stack.append((path + "/", iter(load(e.tree).entries)))


def lookup(load: TreeLoader, root: bytes, path: str) -> Entry | None:
    """The entry at `path` in a stored tree, or None. The root itself has no entry."""
    parts = split_path(path)
    tree = root
    entry: Entry | None = None
    for i, name in enumerate(parts):
        entry = load(tree).get(name)
        if entry is None:
            return None
        if i < len(parts) - 1:
            if not isinstance(entry, DirEntry):
                return None
            tree = entry.tree
    return entry
