"""Which objects (blocks and packs) a version or a part of it needs, and which byte ranges of each.

The trees are the only index of the packs: a pack object is the plain concatenation of the file
contents its ranged locators name (docs/FORMAT.md §4, "Pack objects"). These functions read
trees only, never an object, so `fsmount warm`, gc and repack can plan from them.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from fsmount.errors import UsageError
from fsmount.format.objects import DirEntry, FileEntry
from fsmount.format.tree_edit import TreeLoader, lookup, split_path, walk_tree


@dataclass
class ObjectUse:
    """How a selection uses one object: the byte ranges its files' locators name (merged)."""

    ranges: list[tuple[int, int]] = field(default_factory=list)  # (offset, length), sorted, disjoint
    files: int = 0  # locators naming this object (a file with two blocks in it counts twice)
    ranged: bool = False  # at least one ranged locator names it: a pack (or a part of one)
    _raw: list[tuple[int, int]] = field(default_factory=list, repr=False)

    @property
    def bytes_used(self) -> int:
        return sum(length for _, length in self.ranges)

    @property
    def end(self) -> int:
        """The object is at least this long (the end of the last range used)."""
        return max((off + length for off, length in self.ranges), default=0)


def merge_ranges(ranges: Iterable[tuple[int, int]]) -> list[tuple[int, int]]:
    """Sorted, disjoint (offset, length) ranges covering the same bytes (touching ones joined)."""
    out: list[tuple[int, int]] = []
    for off, length in sorted(ranges):
        if out and off <= out[-1][0] + out[-1][1]:
            start, prev = out[-1]
            out[-1] = (start, max(prev, off + length - start))
        else:
            out.append((off, length))
    return out


def selected_files(
    load: TreeLoader, root: bytes, paths: Iterable[str] = ()
) -> Iterator[tuple[str, FileEntry]]:
    """(path, file entry) under `root`, or under each of `paths` (a file or a directory) in tree order.

    A path that is not in the tree is a UsageError. Files reached twice (overlapping paths) are
    given once.
    """
    wanted = ["/".join(split_path(p)) for p in paths]
    if not wanted or "" in wanted:
        yield from ((p, e) for p, e in walk_tree(load, root) if isinstance(e, FileEntry))
        return
    seen: set[str] = set()
    for p in sorted(set(wanted)):
        if any(p.startswith(s + "/") for s in seen):
            continue
        seen.add(p)
        e = lookup(load, root, p)
        if e is None:
            raise UsageError(f"{p}: no such file or directory in the version")
        if isinstance(e, DirEntry):
            yield from ((q, f) for q, f in walk_tree(load, e.tree, p + "/") if isinstance(f, FileEntry))
        elif isinstance(e, FileEntry):
            yield p, e


def objects_needed(load: TreeLoader, root: bytes, paths: Iterable[str] = ()) -> dict[bytes, ObjectUse]:
    """Every object the files under `root` (or under `paths`) read, with the ranges they read.

    The distinct keys are what a warm-up fetches; for a pack, `ranges` says whether a whole-object
    GET (most of it used) or ranged GETs serve the selection better. Bare locators use their whole
    object (range 0..length).
    """
    uses: dict[bytes, ObjectUse] = {}
    for _, e in selected_files(load, root, paths):
        for ref, (h, off, length, _) in zip(e.blocks, e.spans(), strict=True):
            use = uses.get(h)
            if use is None:
                use = uses[h] = ObjectUse()
            use.files += 1
            use.ranged = use.ranged or not isinstance(ref, bytes)
            use._raw.append((off, length))
    for use in uses.values():
        use.ranges = merge_ranges(use._raw)
        use._raw = []
    return uses
