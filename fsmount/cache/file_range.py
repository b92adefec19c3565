"""A byte range of a file entry for readers without FUSE (fsspec, the web UI): a packed file by its own bytes.

cache/ranges.py reads every locator through its whole object (verified by the object's hash); for a
packed file (one ranged locator covering the whole file, FORMAT.md §4) that makes one damaged file
of a pack fail every file of it, where a mount gives EIO for the damaged file only. Here a packed
file is read as the mount reads it (fs/blocks.py): its slice of the cached or in-memory pack, else
the pack fetched whole, and if the pack fails its hash, one ranged read checked against the
file's own SHA-256. Every other file goes through read_range.
"""

from __future__ import annotations

from fsmount.cache.fetcher import ObjectReader
from fsmount.cache.ranges import read_range
from fsmount.errors import IntegrityError
from fsmount.format.objects import FileEntry


def packed_locator(entry: FileEntry) -> tuple[bytes, int, int] | None:
    """(pack, offset, length) of a packed file, else None."""
    if len(entry.blocks) != 1 or isinstance(entry.blocks[0], bytes) or entry.size <= 0:
        return None
    h, off, length = entry.blocks[0]
    return (h, off, length) if length == entry.size else None


def packed_bytes(reader: ObjectReader, entry: FileEntry,
                 loc: tuple[bytes, int, int]) -> bytes | bytearray | memoryview:
    """The whole packed file, verified against its SHA-256 (IntegrityError if no copy has it right)."""
    h, off, n = loc
    data = reader.packed_slice(h, off, n, entry.sha256)
    if data is not None:
        return data
    if not reader.in_place:
        try:
            reader.span(h, off, n, False)  # the whole pack into the cache, verified by its hash
        except IntegrityError:
            pass  # a damaged pack: this file's own bytes may still be right
        else:
            data = reader.packed_slice(h, off, n, entry.sha256)
            if data is not None:
                return data
    return reader.fetch_range(h, off, n, entry.sha256)


def read_file_range(reader: ObjectReader, entry: FileEntry, offset: int, size: int) -> bytes:
    """Bytes [offset, offset + size) of the file, short at its end; b"" past it (as read_range)."""
    loc = packed_locator(entry)
    if loc is None or entry.sha256 == bytes(32):
        return read_range(reader, entry, offset, size)
    end = min(offset + max(size, 0), entry.size)
    if offset >= end:
        return b""
    return bytes(memoryview(packed_bytes(reader, entry, loc))[offset:end])
