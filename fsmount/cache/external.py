"""External files in the read path: a link entry's chunks, named for the cache and read from their URL.

A link entry is read as a FileEntry *view* whose blocks are its chunks: the chunk's SHA-256 when the
author hashed it (then every chunk fetched is checked against it, like a block), else a key derived
from (URL, version tag, size, chunk size, index), which names those bytes exactly as long as the
tag is the source's. ObjectReader asks `LinkChunks.fetch` before the store (its one hook), so
mounts, `get` and fsspec all share the disk cache, its CRC32C checks and its single-flight fetches.
A source that changed is LinkChanged (EIO), never different bytes.
"""

from __future__ import annotations

import hashlib
import threading
from collections import OrderedDict

from fsmount.format.hashing import digest
from fsmount.format.objects import FileEntry, LinkEntry
from fsmount.store.external import LinkChanged, check_allowed, read_link, shown

UNHASHED = bytes(32)  # the sha256 of a view of a link that was not hashed: no whole-file check possible
_EMPTY = hashlib.sha256(b"").digest()
MAX_CHUNKS = 1 << 18  # chunks of registered links remembered (each a few hundred bytes)


def chunk_key(link: LinkEntry, index: int) -> bytes:
    """The cache key of chunk `index` of an unhashed link: its bytes are fixed by URL, tag and size."""
    text = f"fsmount-link\0{link.url}\0{link.tag}\0{link.size}\0{link.block_size}\0{index}"
    return digest(text.encode("utf-8", "surrogateescape"))


def view(link: LinkEntry) -> FileEntry:
    """The link as a FileEntry whose bare-hash blocks are its chunks (see the module docstring)."""
    n = -(-link.size // link.block_size)
    blocks = link.blocks or tuple(chunk_key(link, i) for i in range(n))
    sha = link.sha256 or (_EMPTY if link.size == 0 else UNHASHED)
    return FileEntry(link.name, link.mode, link.mtime_ns, link.size, sha, link.block_size, blocks,
                     link.origin)


class LinkChunks:
    """Which cache keys are chunks of which links, and how to fetch one. Thread-safe."""

    def __init__(self, max_chunks: int = MAX_CHUNKS) -> None:
        self._chunks: OrderedDict[bytes, tuple[LinkEntry, int]] = OrderedDict()
        self._lock = threading.Lock()
        self._max = max_chunks

    def register(self, link: LinkEntry) -> FileEntry:
        """Make the link's chunks fetchable; returns its view, to read like any file entry."""
        v = view(link)
        with self._lock:
            for i, h in enumerate(link.blocks or v.blocks):
                assert isinstance(h, bytes)
                self._chunks[h] = (link, i)
                self._chunks.move_to_end(h)
            while len(self._chunks) > self._max:
                self._chunks.popitem(last=False)
        return v

    def knows(self, h: bytes) -> bool:
        """Whether `h` is a chunk of a registered link (cached even where store objects are not)."""
        with self._lock:
            return h in self._chunks

    def fetch(self, h: bytes) -> bytes | None:
        """The verified bytes of chunk `h` read from its URL, or None if `h` is no registered chunk."""
        with self._lock:
            found = self._chunks.get(h)
        if found is None:
            return None
        link, i = found
        check_allowed(link.url)
        offset = i * link.block_size
        length = min(link.block_size, link.size - offset)
        data = read_link(link.url, offset, length, link.tag, link.size)
        if link.blocks and digest(data) != h:
            raise LinkChanged(f"external file {shown(link.url)} changed since it was added: bytes {offset}.."
                              f"{offset + length} do not match the SHA-256 recorded by --hash")
        return data
