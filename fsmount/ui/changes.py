"""What changed between two trees, read lazily: counts from directory totals, pages of one kind."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from fsmount.format.objects import DirEntry, Entry, Tree
from fsmount.format.tree_edit import Change

KINDS = ("added", "modified", "removed")
TreeLoader = Callable[[bytes], Tree]


@dataclass(slots=True)
class Counts:
    """Files and symlinks added, modified and removed (a whole new or gone directory counts its totals)."""

    added: int = 0
    modified: int = 0
    removed: int = 0

    @property
    def total(self) -> int:
        return self.added + self.modified + self.removed

    def add(self, other: Counts) -> None:
        self.added += other.added
        self.modified += other.modified
        self.removed += other.removed

    def of(self, kind: str) -> int:
        return int(getattr(self, kind))


@dataclass(slots=True)
class DirCounts:
    """The counts of a directory pair, in all and per child name (children with changes only)."""

    total: Counts = field(default_factory=Counts)
    children: list[tuple[str, bool, Counts]] = field(default_factory=list)  # (name, is_dir, counts)


def _files(e: Entry | None) -> int:
    """Files and symlinks an entry stands for: a directory's stored total, 1 otherwise."""
    if e is None:
        return 0
    return e.nfiles if isinstance(e, DirEntry) else 1


def _pairs(a: Tree, b: Tree) -> Iterator[tuple[str, Entry | None, Entry | None]]:
    """(name, entry in a, entry in b) for every name of either tree, in name order: one merge pass
    over the two sorted entry lists (no set, sort or lookup per name)."""
    ea, eb = a.entries, b.entries
    i = j = 0
    while i < len(ea) or j < len(eb):
        x = ea[i] if i < len(ea) else None
        y = eb[j] if j < len(eb) else None
        if y is None or (x is not None and x.name < y.name):
            yield x.name, x, None  # type: ignore[union-attr]
            i += 1
        elif x is None or y.name < x.name:
            yield y.name, None, y
            j += 1
        else:
            if x is not y and x != y:  # equal entries (most of a changed folder) are passed over here
                yield x.name, x, y
            i += 1
            j += 1


def _pair_counts(load: TreeLoader, ea: Entry | None, eb: Entry | None) -> Counts:
    """Counts for one name present in either tree; only directories present on both sides are read."""
    if isinstance(ea, DirEntry) and isinstance(eb, DirEntry):
        return count(load, ea.tree, eb.tree)
    c = Counts()
    if isinstance(ea, DirEntry) or isinstance(eb, DirEntry) or ea is None or eb is None:
        c.removed, c.added = _files(ea), _files(eb)
    elif not ea.same_content(eb):
        c.modified = 1
    return c


def count(load: TreeLoader, old: bytes, new: bytes) -> Counts:
    """Counts from `old` to `new`; equal subtrees are skipped, one-sided ones taken from their totals."""
    total = Counts()
    stack = [(old, new)]
    while stack:
        a_h, b_h = stack.pop()
        if a_h == b_h:
            continue
        for _, ea, eb in _pairs(load(a_h), load(b_h)):
            if isinstance(ea, DirEntry) and isinstance(eb, DirEntry):
                stack.append((ea.tree, eb.tree))
            else:
                total.add(_pair_counts(load, ea, eb))
    return total


def dir_counts(load: TreeLoader, old: bytes, new: bytes) -> DirCounts:
    """Counts of the directory pair and of each of its children that changed."""
    out = DirCounts()
    if old == new:
        return out
    for name, ea, eb in _pairs(load(old), load(new)):
        c = _pair_counts(load, ea, eb)
        if c.total:
            out.total.add(c)
            out.children.append((name, isinstance(ea, DirEntry) or isinstance(eb, DirEntry), c))
    return out


def page(load: TreeLoader, old: bytes, new: bytes, kind: str, start: int, limit: int,
         prefix: str = "") -> list[Change]:
    """Changes of one `kind`, in path order, from the `start`-th on, at most `limit`.

    Subtrees that hold no change of that kind are not read; whole added (removed) subtrees before
    `start` are skipped by their totals, so a late page of a million added files reads little.
    """
    if kind not in KINDS:
        raise ValueError(kind)
    out: list[Change] = []
    skip = start
    empty = Tree()

    def frame(pre: str, a: Tree, b: Tree) -> tuple[str, Iterator[tuple[str, Entry | None, Entry | None]]]:
        return pre, _pairs(a, b)

    def emit(c: Change) -> None:
        nonlocal skip
        if skip:
            skip -= 1
        else:
            out.append(c)

    stack = [] if old == new else [frame(prefix, load(old), load(new))]
    while stack and len(out) < limit:
        pre, pairs = stack[-1]
        item = next(pairs, None)
        if item is None:
            stack.pop()
            continue
        name, ea, eb = item
        path = pre + name
        if isinstance(ea, DirEntry) and isinstance(eb, DirEntry):
            if ea.tree != eb.tree:
                stack.append(frame(path + "/", load(ea.tree), load(eb.tree)))
            continue
        one_sided = {"removed": ea, "added": eb}.get(kind)
        if isinstance(one_sided, DirEntry):
            if skip >= one_sided.nfiles:
                skip -= one_sided.nfiles
            else:
                sub = load(one_sided.tree)
                pair = (empty, sub) if kind == "added" else (sub, empty)
                stack.append(frame(path + "/", *pair))
            continue
        fa = None if isinstance(ea, DirEntry) else ea
        fb = None if isinstance(eb, DirEntry) else eb
        if kind == "added" and fa is None and fb is not None:
            emit(Change("added", path, None, fb))
        elif kind == "removed" and fb is None and fa is not None:
            emit(Change("removed", path, fa, None))
        elif kind == "modified" and fa is not None and fb is not None and not fa.same_content(fb):
            emit(Change("modified", path, fa, fb))
    return out
