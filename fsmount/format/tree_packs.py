"""Tree packs: the directory trees a version wrote, again, in one object, so that a cold mount lists
its folders with one GET instead of one per folder (docs/FORMAT.md §4, "Tree packs").

The trees stay in the store one object each, as before: a tree pack is only a faster way to the
same bytes, which readers check by hashing each tree it holds. A reader that predates tree packs
ignores the record's `tree_packs` key (unknown keys are ignored) and reads the trees one by one.
"""

from __future__ import annotations

from collections.abc import Iterable

import msgpack

from fsmount.errors import FormatError
from fsmount.format.hashing import digest
from fsmount.format.strict import FORMAT, check_hash, check_int, unpack

TREE_PACK_MAX = 8 * 2**20  # bytes: a version whose new trees are larger writes no tree pack
TREE_PACK_MIN_TREES = 16  # fewer new trees (a change of a few files): the trees alone are enough


def wanted(trees: dict[bytes, bytes]) -> bool:
    """Whether a version that wrote `trees` (hash -> encoded tree) gets a tree pack."""
    return len(trees) >= TREE_PACK_MIN_TREES and sum(len(t) for t in trees.values()) <= TREE_PACK_MAX


def encode_tree_pack(trees: Iterable[bytes]) -> bytes:
    """One tree pack holding these encoded trees (sorted: the same trees give the same object)."""
    return msgpack.packb({"format": FORMAT, "type": "treepack", "trees": sorted(trees)}, use_bin_type=True)


def decode_tree_pack(data: bytes) -> dict[bytes, bytes]:
    """hash -> encoded tree for every tree of a tree pack; FormatError if it is not one."""
    d = unpack(data, "treepack")
    trees = d.get("trees")
    if not isinstance(trees, tuple) or not all(type(t) is bytes for t in trees):
        raise FormatError("malformed tree pack: 'trees' is not an array of bin")
    return {digest(t): t for t in trees}


def check_tree_packs(v: object) -> tuple[tuple[bytes, int], ...]:
    """A record's `tree_packs`: an array of [hash, size] pairs."""
    if not isinstance(v, tuple) or not all(isinstance(p, tuple) and len(p) == 2 for p in v):
        raise FormatError("malformed tree_packs: not an array of [hash, size]")
    return tuple((check_hash(h), check_int(n, lo=1)) for h, n in v)
