"""A byte range of a file entry, read through ObjectReader without FUSE or trio (fsspec, scripts).

The same locator rules as the mount's read path (fs/blocks.py): each span is checked against its
object (ObjectReader.span), every object comes verified from the cache or the store.
"""

from __future__ import annotations

from bisect import bisect_right

from fsmount.cache.fetcher import ObjectReader
from fsmount.format.objects import FileEntry


def read_range(reader: ObjectReader, entry: FileEntry, offset: int, size: int) -> bytes:
    """Bytes [offset, offset + size) of the file, short at its end; b"" past it."""
    end = min(offset + max(size, 0), entry.size)
    if offset >= end:
        return b""
    spans = list(entry.spans())  # (object hash, offset in object, length, offset in file)
    i = bisect_right([s[3] for s in spans], offset) - 1
    parts: list[memoryview] = []
    while i < len(spans) and spans[i][3] < end:
        h, obj_off, length, file_off = spans[i]
        piece = reader.span(h, obj_off, length, isinstance(entry.blocks[i], bytes))
        parts.append(piece[max(offset, file_off) - file_off:min(end, file_off + length) - file_off])
        i += 1
    return b"".join(parts)
