"""Packing small files into pack objects at commit: the settings, tree order, one pack being filled,
and the index of content the parents already hold (reused instead of packed again).

A pack object is the plain concatenation of distinct file contents (no header, no padding), named
by its SHA-256 like every object; entries point into it with ranged locators `[pack, offset,
length]` (docs/FORMAT.md §4, "Pack objects").
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any

from fsmount import config
from fsmount.format.hashing import digest
from fsmount.format.objects import BlockRef, DirEntry, FileEntry, Tree
from fsmount.format.tree_edit import walk_tree

# sha256 of a file's content -> (block size, locators) of an entry that already stores it
Reuse = Mapping[bytes, tuple[int, tuple[BlockRef, ...]]]


@dataclass(frozen=True, slots=True)
class Packing:
    """Files of 1 byte up to `threshold - 1` are packed, into packs filled up to `target` bytes."""

    threshold: int = config.DEFAULT_PACK_THRESHOLD
    target: int = config.DEFAULT_PACK_SIZE

    def packs(self, size: int) -> bool:
        return 0 < size < self.threshold

    def to_meta(self) -> dict[str, int]:
        return {"pack_threshold": self.threshold, "pack_size": self.target}


NO_PACKING = Packing(0, config.DEFAULT_PACK_SIZE)


def packing(threshold: str | int | None = None, size: str | int | None = None,
            meta: Mapping[str, Any] | None = None) -> Packing:
    """The packing of a commit: what is given, else the draft's (`meta`, its draft.json), else the
    configuration ($FSMOUNT_PACK_THRESHOLD, $FSMOUNT_PACK_SIZE, else 1 MiB and 32 MiB)."""
    meta = meta or {}
    if threshold is None:
        threshold = meta.get("pack_threshold")
    if size is None:
        size = meta.get("pack_size")
    return Packing(config.pack_threshold(threshold), config.pack_size(size))


def tree_key(dest: str) -> tuple[bytes, ...]:
    """Sort key putting dataset paths in tree order (depth first, names by UTF-8 bytes, as trees are
    sorted), so that a directory's files sit next to each other in the packs."""
    return tuple(p.encode("utf-8", "surrogateescape") for p in dest.split("/"))


def content_index(tree: Callable[[bytes], Tree], roots: Iterable[bytes], threshold: int,
                  suspect: frozenset[bytes] | set[bytes] = frozenset()) -> Reuse:
    """Small files (below `threshold`) under `roots`, by SHA-256: where their content already is.

    A file staged with one of these contents takes the stored entry's locators instead of being
    packed again. Entries with a block in `suspect` (found damaged by a verify) are not offered.
    """
    index: dict[bytes, tuple[int, tuple[BlockRef, ...]]] = {}
    if threshold <= 0:
        return index
    for root in roots:
        for _, e in walk_tree(tree, root):
            if isinstance(e, DirEntry) or not isinstance(e, FileEntry) or not 0 < e.size < threshold:
                continue
            if e.sha256 in index or any(object_of(b) in suspect for b in e.blocks):
                continue
            index[e.sha256] = (e.block_size, e.blocks)
    return index


def object_of(ref: BlockRef) -> bytes:
    """The object a locator names (a bare hash, or the pack of a ranged one)."""
    return ref if isinstance(ref, bytes) else ref[0]


@dataclass
class PackBuilder:
    """One pack being filled: distinct contents appended in order, each at its offset."""

    chunks: list[bytes] = field(default_factory=list)
    offsets: dict[bytes, tuple[int, int]] = field(default_factory=dict)  # content sha -> (offset, length)
    size: int = 0

    def add(self, sha: bytes, data: bytes) -> None:
        """Append `data` (whose SHA-256 is `sha`) unless this pack holds it already."""
        if sha not in self.offsets:
            self.offsets[sha] = (self.size, len(data))
            self.chunks.append(data)
            self.size += len(data)

    def seal(self, block_size: int) -> tuple[bytes, bytes, dict[bytes, BlockRef]]:
        """(object hash, object bytes, content sha -> locator). A pack holding a single content is
        stored as that content's own block, named by the file's SHA-256 with a bare locator (as a
        small file without packing is), so it deduplicates with every other copy of those bytes."""
        if len(self.chunks) == 1:
            (sha, (_, length)), = self.offsets.items()
            data = self.chunks[0]
            ref: BlockRef = sha if length <= block_size else (sha, 0, length)
            return sha, data, {sha: ref}
        data = b"".join(self.chunks)
        h = digest(data)
        return h, data, {sha: (h, off, length) for sha, (off, length) in self.offsets.items()}
