"""Part of a version for a local copy: `--part K --num-parts N` (balanced by bytes) and `--files GLOB`.

A selection is written as a tree of its own, only into the local cache (never the store), so a
copy of a selection is made by the same code as a copy of a whole version, and a read-only copy
of it is shared per host under the selection's tree hash.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from fsmount.cache.fetcher import ObjectReader
from fsmount.commit.staging import matches
from fsmount.errors import UsageError
from fsmount.format.objects import DirEntry, Entry, FileEntry
from fsmount.format.tree_edit import TreeEditor, walk_tree

MAX_PARTS = 1_000_000


@dataclass(frozen=True, slots=True)
class Selection:
    """Which part of a version: part `part` of `num_parts`, and/or the paths matching `patterns`."""

    part: int | None = None
    num_parts: int | None = None
    patterns: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if (self.part is None) != (self.num_parts is None):
            raise UsageError("--part K and --num-parts N go together")
        if self.num_parts is not None and self.part is not None:
            if not 1 <= self.num_parts <= MAX_PARTS:
                raise UsageError(f"--num-parts must be 1 to {MAX_PARTS}, not {self.num_parts}")
            if not 0 <= self.part < self.num_parts:
                raise UsageError(f"--part must be 0 to {self.num_parts - 1} for {self.num_parts} parts, "
                                 f"not {self.part}")
        for p in self.patterns:
            if not p.strip("/"):
                raise UsageError("an empty --files pattern selects nothing: give a glob such as 'train/**'")

    @property
    def whole(self) -> bool:
        return self.num_parts is None and not self.patterns


def part_of(sizes: Sequence[int], num_parts: int) -> list[int]:
    """The part of each item: contiguous runs in order, cut where the running byte total crosses k/N.

    An item belongs to the part its first byte falls in, so each part holds total/N bytes give or
    take one item's size; the same sizes in the same order give the same split on every machine.
    Items of no size (or all of them, when the total is 0) are split by count the same way.
    """
    total = sum(sizes)
    if total == 0:
        n = len(sizes)
        return [i * num_parts // n for i in range(n)]
    out, start = [], 0
    for size in sizes:
        out.append(min(num_parts - 1, start * num_parts // total))
        start += size
    return out


def select_root(reader: ObjectReader, root: bytes, sel: Selection) -> bytes:
    """The root of a tree holding the selected entries of `root` (with their directories' attributes)."""
    if sel.whole:
        return root
    dirs: dict[str, DirEntry] = {}
    leaves: list[tuple[str, Entry]] = []
    for path, e in walk_tree(reader.tree, root):
        if isinstance(e, DirEntry):
            dirs[path] = e
        elif not sel.patterns or any(matches(path, p) for p in sel.patterns):
            leaves.append((path, e))
    if sel.num_parts is not None:
        parts = part_of([e.size if isinstance(e, FileEntry) else 0 for _, e in leaves], sel.num_parts)
        leaves = [item for item, k in zip(leaves, parts, strict=True) if k == sel.part]
        if sel.part == 0 and not sel.patterns:  # empty directories: in part 0, so the parts cover the version
            for path, d in dirs.items():
                if d.nfiles == 0:
                    leaves.append((path, d))
    editor = TreeEditor(reader.tree)
    for path, e in leaves:
        parent = path.rpartition("/")[0]
        chain: list[str] = []
        while parent and editor.get(parent) is None:
            chain.append(parent)
            parent = parent.rpartition("/")[0]
        for missing in reversed(chain):
            editor.mkdir(missing, dirs[missing].mode, dirs[missing].mtime_ns)
        if isinstance(e, DirEntry):
            editor.mkdir(path, e.mode, e.mtime_ns)
        else:
            editor.put(path, e)

    def keep_locally(h: bytes, data: bytes) -> None:
        reader.cache.put(h, data)

    new_root, _ = editor.write(keep_locally)
    return new_root

