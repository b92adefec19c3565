"""Directory trees and their entries (file, dir, symlink, link), with the validated msgpack codec.

docs/FORMAT.md describes every field; a change here is a change there.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from operator import attrgetter
from typing import Any

import msgpack

from fsmount.errors import FormatError
from fsmount.format.hashing import HASH_LEN, digest
from fsmount.format.names import is_version_id
from fsmount.format.strict import FORMAT, check_hash, check_int, unpack, unpack_strict

KIND_FILE = 0
KIND_DIR = 1
KIND_SYMLINK = 2
KIND_LINK = 3  # an external file: bytes that stay at a URL (docs/FORMAT.md §4, "Link entry")


MAX_BLOCK_SIZE = 2**30  # readers accept block sizes 1 ... 2**30 (writers use 4 KiB ... 1 GiB)
MIN_MTIME, MAX_MTIME = -(2**63), 2**63 - 1  # nanoseconds: int64
MAX_TARGET_BYTES = 4095  # a symlink target, as Linux allows
MAX_URL_BYTES = 8192  # a link entry's URL
MAX_TAG_BYTES = 1024  # a link entry's version tag (ETag, generation, mtime:size)

BlockRef = bytes | tuple[bytes, int, int]  # whole object, or (object, offset, length)


def validate_name(name: object) -> str:
    """Reject names a hostile store could use to escape a tree."""
    if (
        not isinstance(name, str)
        or not name
        or name in (".", "..")
        or "/" in name
        or "\0" in name
        or not _utf8_len_ok(name)
    ):
        raise FormatError(f"invalid entry name {name!r} in tree")
    return name


def _utf8_len_ok(name: str) -> bool:
    return _fits(name, 255)


def _fits(text: str, max_bytes: int) -> bool:
    """`text` is valid UTF-8 of at most `max_bytes` bytes."""
    if len(text) > max_bytes:  # every character is at least one byte: no need to encode a huge str
        return False
    try:
        return len(text.encode("utf-8")) <= max_bytes
    except UnicodeEncodeError:  # a lone surrogate: the on-disk name was not UTF-8
        return False


@dataclass(slots=True, frozen=True)
class FileEntry:
    """A regular file: a sequence of blocks plus its whole-file SHA-256."""

    name: str
    mode: int
    mtime_ns: int
    size: int
    sha256: bytes
    block_size: int
    blocks: tuple[BlockRef, ...]
    origin: str  # id of the version that last changed this file
    link: bytes | None = None  # hard-link group (16 bytes): the tree's optional `links` map, §4
    nlink: int = 1  # names of that group in the version
    kind = KIND_FILE

    def spans(self) -> Iterator[tuple[bytes, int, int, int]]:
        """Yield (object hash, offset in object, length, offset in file) per block."""
        pos = 0
        for ref in self.blocks:
            if isinstance(ref, bytes):
                length = min(self.block_size, self.size - pos)
                yield ref, 0, length, pos
            else:
                h, off, length = ref
                yield h, off, length, pos
            pos += length

    def same_content(self, other: object) -> bool:
        return (
            isinstance(other, FileEntry)
            and other.sha256 == self.sha256
            and other.size == self.size
            and other.mode == self.mode
        )


@dataclass(slots=True, frozen=True)
class DirEntry:
    """A subdirectory: the hash of its own tree object, and totals over that subtree."""

    name: str
    mode: int
    mtime_ns: int
    tree: bytes
    nfiles: int
    nbytes: int
    kind = KIND_DIR


@dataclass(slots=True, frozen=True)
class SymlinkEntry:
    """A symbolic link, stored as its target text; never followed by fsmount."""

    name: str
    mode: int
    mtime_ns: int
    target: str
    origin: str
    kind = KIND_SYMLINK

    def same_content(self, other: object) -> bool:
        return isinstance(other, SymlinkEntry) and other.target == self.target


@dataclass(slots=True, frozen=True)
class LinkEntry:
    """An external file: `size` bytes at `url`, as they were when the store's version `tag` was read.

    `sha256` and `blocks` (the SHA-256 of each `block_size` chunk) are filled in only when the
    author hashed it (`add --links --hash`); otherwise both are empty and only the tag and size
    are checked on every read.
    """

    name: str
    mode: int
    mtime_ns: int
    size: int
    url: str
    tag: str
    sha256: bytes  # b"" (not hashed) or 32 bytes
    block_size: int
    blocks: tuple[bytes, ...]  # () (not hashed) or the SHA-256 of every chunk, in order
    origin: str
    kind = KIND_LINK

    def same_content(self, other: object) -> bool:
        return (
            isinstance(other, LinkEntry)
            and (other.url, other.tag, other.size, other.sha256, other.mode)
            == (self.url, self.tag, self.size, self.sha256, self.mode)
        )


Entry = FileEntry | DirEntry | SymlinkEntry | LinkEntry
_entry_name = attrgetter("name")


@dataclass(slots=True)
class Tree:
    """One directory: its entries sorted by name (str order). Named by the hash of its encoding.

    decode_tree guarantees the order (names strictly increasing); a Tree built in memory must
    keep it for `index` and `get`.
    """

    entries: list[Entry] = field(default_factory=list)

    def index(self, name: str) -> int | None:
        """Position of `name` in `entries`, or None. Bisection: no name index is kept per tree
        (a mount holds thousands of trees; a million-file mount must stay small). encode_tree sorts
        by UTF-8 bytes; stored names are valid UTF-8, whose byte order is code point order, which
        is str order."""
        i = bisect_left(self.entries, name, key=_entry_name)
        return i if i < len(self.entries) and self.entries[i].name == name else None

    def get(self, name: str) -> Entry | None:
        i = self.index(name)
        return None if i is None else self.entries[i]

    @property
    def nfiles(self) -> int:
        return sum(e.nfiles if isinstance(e, DirEntry) else 1 for e in self.entries)

    @property
    def nbytes(self) -> int:
        return sum(
            e.nbytes if isinstance(e, DirEntry) else e.size if isinstance(e, FileEntry | LinkEntry) else 0
            for e in self.entries
        )


def _origin_bytes(origin: str) -> bytes:
    return bytes.fromhex(origin)


def _encode_entry(e: Entry) -> list[Any]:
    if isinstance(e, FileEntry):
        blocks = [b if isinstance(b, bytes) else list(b) for b in e.blocks]
        return [e.name, KIND_FILE, e.mode, e.mtime_ns, e.size, e.sha256, e.block_size, blocks,
                _origin_bytes(e.origin)]
    if isinstance(e, DirEntry):
        return [e.name, KIND_DIR, e.mode, e.mtime_ns, e.tree, e.nfiles, e.nbytes]
    if isinstance(e, LinkEntry):
        return [e.name, KIND_LINK, e.mode, e.mtime_ns, e.size, e.url, e.tag, e.sha256, e.block_size,
                list(e.blocks), _origin_bytes(e.origin)]
    return [e.name, KIND_SYMLINK, e.mode, e.mtime_ns, e.target, _origin_bytes(e.origin)]


def encode_tree(entries: Iterable[Entry]) -> bytes:
    """Serialise a directory; entries are sorted by name so equal trees hash equal.

    Hard-linked files add the optional `links` key (name -> [group, nlink], FORMAT.md §4),
    written only when there is one, so a tree without links encodes as it always did."""
    ordered = sorted(entries, key=lambda e: e.name.encode("utf-8", "surrogateescape"))
    obj: dict[str, Any] = {"format": FORMAT, "type": "tree", "entries": [_encode_entry(e) for e in ordered]}
    links = {e.name: [e.link, e.nlink] for e in ordered if isinstance(e, FileEntry) and e.link is not None}
    if links:
        obj["links"] = links
    return msgpack.packb(obj, use_bin_type=True)


LINK_ID_LEN = 16
MAX_NLINK = 2**32 - 1


def _apply_links(entries: list[Entry], raw: object) -> None:
    """The tree's `links` map onto its file entries (validated: names of files, ids, counts)."""
    if not isinstance(raw, dict):
        raise FormatError("malformed links map in tree")
    index = {e.name: i for i, e in enumerate(entries) if isinstance(e, FileEntry)} if raw else {}
    for name, value in raw.items():
        i = index.get(name)
        if (i is None or not isinstance(value, tuple | list) or len(value) != 2
                or type(value[0]) is not bytes or len(value[0]) != LINK_ID_LEN):
            raise FormatError(f"malformed links entry {name!r} in tree")
        e = entries[i]
        assert isinstance(e, FileEntry)
        entries[i] = FileEntry(e.name, e.mode, e.mtime_ns, e.size, e.sha256, e.block_size, e.blocks, e.origin,
                               value[0], check_int(value[1], 1, MAX_NLINK))


def _decode_block(b: object) -> BlockRef:
    if isinstance(b, bytes):
        return check_hash(b)
    if isinstance(b, tuple | list) and len(b) == 3:
        return (check_hash(b[0]), check_int(b[1]), check_int(b[2]))
    raise FormatError("malformed block locator in tree")


def _blocks_add_up(blocks: tuple[BlockRef, ...], block_size: int, size: int) -> bool:
    pos = 0
    for ref in blocks:
        length = min(block_size, size - pos) if isinstance(ref, bytes) else ref[2]
        if length <= 0:
            return False
        pos += length
    return pos == size


def _decode_entry(raw: object, shared: dict[object, Any]) -> Entry:
    """One positional entry, validated. `shared` interns values repeated across a tree.

    A mount keeps every entry the kernel references in memory (a million after a `find`),
    so repeated values (origin ids, block sizes, the hash of a single-block file, which is
    also its only block) are one object each, not one per entry.
    """
    if not isinstance(raw, tuple | list) or len(raw) < 4:
        raise FormatError("malformed tree entry")
    name = validate_name(raw[0])
    kind, mode, mtime = raw[1], raw[2], raw[3]
    if type(kind) is not int:  # True == 1 and 1.0 == 1: only a real int is a kind
        raise FormatError(f"malformed entry kind {kind!r} for {name!r}")
    if type(mode) is not int or mode < 0 or type(mtime) is not int or not MIN_MTIME <= mtime <= MAX_MTIME:
        raise FormatError(f"malformed mode or mtime for {name!r}")
    mode &= 0o7777
    if kind == KIND_FILE and len(raw) == 9:
        size, sha, bs, raw_blocks = raw[4], raw[5], raw[6], raw[7]
        if type(size) is not int or size < 0 or type(bs) is not int or not 1 <= bs <= MAX_BLOCK_SIZE:
            raise FormatError(f"malformed size or block size for {name!r}")
        check_hash(sha)
        if not isinstance(raw_blocks, tuple | list):
            raise FormatError(f"malformed block list for {name!r}")
        bs = shared.setdefault(bs, bs)
        blocks: tuple[BlockRef, ...]
        if len(raw_blocks) == 1 and raw_blocks[0] == sha:  # single-block file: hash == block hash
            blocks, ok = (sha,), 0 < size <= bs
        else:
            blocks = tuple(_decode_block(b) for b in raw_blocks)
            ok = _blocks_add_up(blocks, bs, size)
        if not ok:
            raise FormatError(f"blocks of {name!r} do not add up to its size")
        return FileEntry(name, mode, mtime, size, sha, bs, blocks, _origin(raw[8], shared))
    if kind == KIND_DIR and len(raw) == 7:
        return DirEntry(name, mode, mtime, check_hash(raw[4]), check_int(raw[5]), check_int(raw[6]))
    if kind == KIND_SYMLINK and len(raw) == 6:
        target = raw[4]
        if not isinstance(target, str) or "\0" in target or not target or not _fits(target, MAX_TARGET_BYTES):
            raise FormatError(f"malformed symlink target for {name!r}")
        return SymlinkEntry(name, mode, mtime, raw[4], _origin(raw[5], shared))
    if kind == KIND_LINK and len(raw) == 11:
        return _decode_link(name, mode, mtime, raw, shared)
    raise FormatError(f"unknown entry kind {kind!r} for {name!r}")


def _decode_link(
    name: str, mode: int, mtime: int, raw: Sequence[Any], shared: dict[object, Any]
) -> LinkEntry:
    size, url, tag, sha, bs, raw_blocks = raw[4:10]
    if type(size) is not int or size < 0 or type(bs) is not int or not 1 <= bs <= MAX_BLOCK_SIZE:
        raise FormatError(f"malformed size or block size for link {name!r}")
    if type(url) is not str or "://" not in url or "\0" in url or not _fits(url, MAX_URL_BYTES):
        raise FormatError(f"malformed URL for link {name!r}")
    if type(tag) is not str or "\0" in tag or not _fits(tag, MAX_TAG_BYTES):
        raise FormatError(f"malformed version tag for link {name!r}")
    if type(sha) is not bytes or len(sha) not in (0, HASH_LEN) or not isinstance(raw_blocks, tuple | list):
        raise FormatError(f"malformed SHA-256 or chunk list for link {name!r}")
    blocks = tuple(check_hash(b) for b in raw_blocks)
    if blocks and (not sha or len(blocks) != -(-size // bs)):  # hashed: one hash per chunk
        raise FormatError(f"chunk hashes of link {name!r} do not add up to its size")
    bs = shared.setdefault(bs, bs)
    return LinkEntry(name, mode, mtime, size, url, tag, sha, bs, blocks, _origin(raw[10], shared))


def link_entry_to_json(e: LinkEntry) -> dict[str, Any]:
    """A link entry (without its name and origin) as JSON fields: the staging journal's form (§12)."""
    return {"mode": e.mode, "mtime_ns": e.mtime_ns, "size": e.size, "url": e.url, "tag": e.tag,
            "sha256": e.sha256.hex(), "block_size": e.block_size, "blocks": [b.hex() for b in e.blocks]}


def link_entry_from_json(name: str, d: object, origin: str) -> LinkEntry:
    """Inverse of link_entry_to_json, validated like a tree entry."""
    try:
        assert isinstance(d, dict)
        raw = (name, KIND_LINK, d["mode"], d["mtime_ns"], d["size"], d["url"], d["tag"],
               bytes.fromhex(d["sha256"]), d["block_size"], [bytes.fromhex(b) for b in d["blocks"]],
               bytes.fromhex(origin))
        e = _decode_entry(raw, {})
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError, IndexError) as ex:
        raise FormatError(f"malformed link entry {name!r}: {ex!r}") from None
    assert isinstance(e, LinkEntry)
    return e


def _origin(raw: object, shared: dict[object, Any]) -> str:
    if type(raw) is not bytes or len(raw) != 16:
        raise FormatError("malformed origin version id in tree")
    origin = shared.get(raw)
    if origin is None:
        origin = shared[raw] = raw.hex()
    return origin


def decode_tree(data: bytes) -> Tree:
    obj = unpack(data, "tree")
    raw = obj.get("entries")
    if not isinstance(raw, tuple | list):
        raise FormatError("malformed tree: no entry list")
    try:
        shared: dict[object, Any] = {}
        entries = [_decode_entry(r, shared) for r in raw]
    except (TypeError, AttributeError, ValueError, IndexError) as e:  # hostile or damaged input
        raise FormatError(f"malformed tree entry: {e}") from None
    # Strictly increasing names: sorted (readers bisect) and unique. For valid UTF-8, str order
    # is the UTF-8 byte order encode_tree sorts by.
    for a, b in pairwise(entries):
        if not a.name < b.name:
            raise FormatError(f"tree entries not sorted or duplicated at {b.name!r}")
    if "links" in obj:
        _apply_links(entries, obj["links"])
    return Tree(entries)


# -- one file entry outside a tree: the overlay's rows and the staging journal ---------------
#
# Both go through _decode_entry, the tree's own validation (name rules, ints, hashes, blocks
# adding up to the size), so a damaged or hostile row or journal line is refused the same way
# a damaged tree is.


def encode_file_entry(e: FileEntry) -> bytes:
    """A file entry alone, as msgpack: exactly the positional array it has in a tree."""
    return msgpack.packb(_encode_entry(e), use_bin_type=True)


def decode_file_entry(data: bytes) -> FileEntry:
    """Inverse of encode_file_entry, validated. Also reads the older 8-element form that overlays
    wrote before (no kind; origin as 32 hex digits): `[name, mode, mtime, size, sha, bs, blocks, origin]`."""
    try:
        raw = unpack_strict(data)
    except (ValueError, msgpack.UnpackException, TypeError) as e:
        raise FormatError(f"undecodable file entry: {e}") from None
    if isinstance(raw, tuple) and len(raw) == 8:
        if not isinstance(raw[7], str) or not is_version_id(raw[7]):
            raise FormatError("malformed origin version id in file entry")
        raw = (raw[0], KIND_FILE, *raw[1:7], bytes.fromhex(raw[7]))
    return _file_entry(raw)


def file_entry_to_json(e: FileEntry) -> dict[str, Any]:
    """A file entry (without its name) as JSON fields: hashes in hex (docs/FORMAT.md, section 11)."""
    return {
        "mode": e.mode,
        "mtime_ns": e.mtime_ns,
        "size": e.size,
        "sha256": e.sha256.hex(),
        "block_size": e.block_size,
        "blocks": [b.hex() if isinstance(b, bytes) else [b[0].hex(), b[1], b[2]] for b in e.blocks],
        "origin": e.origin,
    }


def file_entry_from_json(name: str, d: object) -> FileEntry:
    """Inverse of file_entry_to_json, validated like a tree entry."""
    try:
        assert isinstance(d, dict)
        blocks = [bytes.fromhex(b) if isinstance(b, str) else (bytes.fromhex(b[0]), b[1], b[2])
                  for b in d["blocks"]]
        if not is_version_id(d["origin"]):
            raise FormatError("malformed origin version id in file entry")
        raw = (name, KIND_FILE, d["mode"], d["mtime_ns"], d["size"], bytes.fromhex(d["sha256"]),
               d["block_size"], blocks, bytes.fromhex(d["origin"]))
    except (AssertionError, KeyError, TypeError, ValueError, AttributeError, IndexError) as e:
        raise FormatError(f"malformed file entry {name!r}: {e!r}") from None
    return _file_entry(raw)


def _file_entry(raw: object) -> FileEntry:
    try:
        e = _decode_entry(raw, {})
    except (TypeError, AttributeError, ValueError, IndexError) as ex:
        raise FormatError(f"malformed file entry: {ex}") from None
    if not isinstance(e, FileEntry):
        raise FormatError(f"expected a file entry, found {type(e).__name__} {e.name!r}")
    return e


def tree_object(entries: Iterable[Entry]) -> tuple[bytes, bytes]:
    """Return (hash, encoded bytes) of a directory made of `entries`."""
    data = encode_tree(entries)
    return digest(data), data


EMPTY_TREE_HASH, EMPTY_TREE_BYTES = tree_object(())
