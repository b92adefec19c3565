"""The per-host content cache: a diskcache of verified objects keyed by hash, with an LRU byte cap."""

from __future__ import annotations

import contextlib
import io
import logging
import os
import sqlite3
import threading
import time
from array import array
from collections import OrderedDict
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import diskcache
import google_crc32c

from fsmount import config
from fsmount.config import DEFAULT_CACHE_SIZE, default_cache_dir, parse_size
from fsmount.errors import UsageError
from fsmount.format.hashing import digest

# DEFAULT_CACHE_SIZE, default_cache_dir and parse_size live in fsmount.config; importable here too.
__all__ = ["DEFAULT_CACHE_SIZE", "ContentCache", "default_cache_dir", "parse_size"]

log = logging.getLogger(__name__)

_FILE_MIN = 2**15  # diskcache's default min_file_size: smaller values live inside SQLite


def checksum(data: bytes) -> int:
    """CRC32C of a cached object: kept as its diskcache tag from insertion, checked on every read.

    About 20 GiB/s (0.2 ms per 4 MiB block, SSE4.2), against 1.5 GiB/s for the object's own
    SHA-256 (2.7 ms): cheap enough to check every byte the cache serves.
    """
    return int(google_crc32c.value(data))


class CorruptEntry(Exception):
    """A cached object failed its checksum; the entry has been dropped from the cache."""

    def __init__(self, h: bytes, directory: Path) -> None:
        super().__init__(f"cached object {h.hex()} in {directory} is damaged (checksum mismatch)")
        self.hash = h


class WouldBlock(Exception):
    """A non-blocking read (nowait) would have to wait for a lookup or the disk."""


class PageMiss(WouldBlock):
    """A non-blocking read (nowait) of an open cached file whose bytes are not in the page cache."""


_FD_MAX = 64  # open cached pack files kept (each may pin an evicted file's space until closed)
CHECK_PAGE = 2**14  # a paged-in pack's bytes are checked by CRC32C in pages of this size
_PAGE_TABLES = 256  # packs whose page CRC32Cs are kept (8 KiB per 32 MiB pack)
_FD_RECHECK = 5.0  # seconds after which a kept pack file is looked up again (LRU touch, eviction check)


def page_crcs(data: bytes) -> array[int]:
    """The CRC32C of each CHECK_PAGE of `data` (the last page may be short)."""
    return array("I", (checksum(data[i:i + CHECK_PAGE]) for i in range(0, len(data), CHECK_PAGE)))


class _PackFile:
    """An open cached object file shared by ranged readers; closed when dropped and unused."""

    __slots__ = ("checked", "crc", "dead", "fd", "size", "users")

    def __init__(self, fd: int, size: int, crc: int | None) -> None:
        self.fd = fd
        self.size = size
        self.crc = crc  # of the whole object, from its insertion (None: an entry older than checksums)
        self.users = 0
        self.dead = False
        self.checked = time.monotonic()


def _meta_key(kind: str, name: str) -> str:
    return f"{kind}:{name}"


class ContentCache:
    """Immutable objects by hash, shared by every process on the host.

    Everything here was verified against its hash before it went in, so nothing
    ever goes stale and no TTL exists. Eviction is least-recently-used, by bytes.
    Each object carries the CRC32C of its bytes (the diskcache tag, computed at insertion from
    the verified bytes); get() checks it before returning anything, so a damaged block file or
    SQLite value is never served.
    """

    def __init__(
        self, directory: str | os.PathLike[str] | None = None, size_limit: int | str | None = None
    ) -> None:
        self.directory = config.cache_dir(directory)
        self.size_limit = config.cache_size(size_limit)
        try:
            # Private to its owner: a file that is 0600 in a version must not be readable by other users
            # through its cached blocks. The cache folder, diskcache's shard folders and copies/ are 0700,
            # made so or tightened when they are ours; the cache folder itself is left as it is when it is
            # shared (sticky, as /tmp) or holds other things: what is inside its subfolders stays private.
            self.directory.mkdir(parents=True, exist_ok=True, mode=0o700)
            ours = {"copies", *(f"{i:03d}" for i in range(8))}  # 8: the shards of the FanoutCache below
            for sub in ("", *sorted(ours)):
                d = self.directory / sub
                d.mkdir(mode=0o700, exist_ok=True)
                fd = os.open(d, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC | (os.O_NOFOLLOW if sub else 0))
                try:
                    st = os.fstat(fd)
                    if sub and st.st_uid != os.geteuid():
                        raise UsageError(f"cache folder {d} belongs to uid {st.st_uid}: use a cache folder "
                                         "of your own (--cache-dir)")
                    tighten = (st.st_mode & 0o7077 if sub else st.st_mode & 0o077 and not st.st_mode & 0o1000
                               and all(n in ours or n.startswith(".probe-") for n in os.listdir(fd)))
                    if tighten and st.st_uid == os.geteuid():
                        os.fchmod(fd, 0o700)
                finally:
                    os.close(fd)
            probe = self.directory / f".probe-{os.getpid()}"
            probe.write_bytes(b"")
            probe.unlink()
        except OSError as e:
            raise UsageError(f"cache directory {self.directory} is not writable: {e.strerror}") from None
        try:
            # Shards: 16 fetch threads writing to one SQLite database queue on its write lock.
            self._cache = diskcache.FanoutCache(
                str(self.directory),
                shards=8,
                timeout=2.0,
                size_limit=self.size_limit,
                eviction_policy="least-recently-used",
                cull_limit=16,
                sqlite_mmap_size=2**28,
            )
        except sqlite3.Error as e:
            raise UsageError(f"cannot open cache in {self.directory}: {e}") from None
        self._behind_max = 0  # write-behind: off until set_write_behind
        self._behind_bytes = 0
        self._behind_cv = threading.Condition()
        self._behind_pool: ThreadPoolExecutor | None = None
        self._files: OrderedDict[bytes, _PackFile] = OrderedDict()  # read_range's open pack files
        self._pages: OrderedDict[bytes, array[int]] = OrderedDict()  # paged-in packs: their page CRC32Cs
        self._files_lock = threading.Lock()

    # -- ranges of cached packs ------------------------------------------------------

    def read_range(self, h: bytes, offset: int, length: int,
                   nowait: bool = False) -> tuple[bytes | bytearray | memoryview, bool] | None:
        """Bytes [offset, offset+length) of cached object `h` (possibly short), None if not cached;
        with whether they were checked here.

        A pack that page_in() read through has the CRC32C of each of its CHECK_PAGE pages, taken
        from bytes that matched the object's insertion checksum: the pages under the range are read
        and checked against them (CorruptEntry, after dropping the entry, on a mismatch). Otherwise
        the range is NOT checked here: the caller checks it against what it must hash to (a packed
        file's SHA-256), so reading one file of a 32 MiB pack costs that file's bytes, not the
        pack's CRC. The pack's file stays open (at most _FD_MAX of them, LRU) and is looked up in
        the cache again every _FD_RECHECK seconds, which keeps it recently used for the cache's LRU
        and lets go of it once evicted. With `nowait`, raises WouldBlock instead of a lookup or a
        read that is not in the page cache (preadv RWF_NOWAIT): for the event loop's fast path.
        """
        pf = self._open_file(h, nowait)
        if not isinstance(pf, _PackFile):
            return None if pf is None else (pf[offset:offset + length], False)
        try:
            pages = self._pages.get(h)
            if pages is not None and len(pages) == -(-pf.size // CHECK_PAGE) and offset < pf.size:
                return self._read_pages(h, pf, pages, offset, length, nowait), True
            if not nowait:
                return os.pread(pf.fd, length, offset), False
            buf = bytearray(length)  # the one copy out of the page cache, handed on as it is
            n = self._read_into(pf, buf, offset)
            if n < length:
                del buf[n:]
            return buf, False
        finally:
            self._release_file(pf)

    def _read_into(self, pf: _PackFile, buf: bytearray, offset: int) -> int:
        """preadv RWF_NOWAIT; PageMiss unless all of it (to the file's end) is in the page cache."""
        try:
            n = os.preadv(pf.fd, [buf], offset, os.RWF_NOWAIT)
        except BlockingIOError:
            raise PageMiss() from None
        if n < len(buf) and offset + n < pf.size:  # a partial page-cache hit: read the rest off-loop
            raise PageMiss()
        return n

    def _read_pages(self, h: bytes, pf: _PackFile, pages: array[int], offset: int, length: int,
                    nowait: bool) -> memoryview:
        start = offset - offset % CHECK_PAGE
        end = min(pf.size, -(-(offset + length) // CHECK_PAGE) * CHECK_PAGE)
        buf = bytearray(end - start)
        n = self._read_into(pf, buf, start) if nowait else os.preadv(pf.fd, [buf], start)
        view = memoryview(buf)
        first = start // CHECK_PAGE
        if n < end - start:  # the file got shorter than when it was opened
            self.discard(h)
            raise CorruptEntry(h, self.directory)
        for i, at in enumerate(range(0, end - start, CHECK_PAGE)):
            if checksum(bytes(view[at:at + CHECK_PAGE])) != pages[first + i]:  # crc32c takes bytes only
                self.discard(h)
                raise CorruptEntry(h, self.directory)
        return view[offset - start:offset - start + length]

    def page_in(self, h: bytes, chunk: int = 2**22) -> bool:
        """Read cached object `h`'s file through once (sequential, big reads) so its pages are in the
        page cache: the ranged reads that follow (an epoch reading a pack's files in any order) are
        then RWF_NOWAIT hits on the event loop, and the disk sees one sequential read per pack
        instead of one seek per file. The bytes read are checked against the object's insertion
        checksum, and the CRC32C of each CHECK_PAGE page is kept: read_range then checks a file's
        pages instead of the caller hashing the file (CorruptEntry, after dropping the entry, when
        the object is damaged). False if not cached."""
        pf = self._open_file(h, False)
        if not isinstance(pf, _PackFile):
            return pf is not None
        try:
            with contextlib.suppress(OSError):
                os.posix_fadvise(pf.fd, 0, 0, os.POSIX_FADV_WILLNEED)  # the kernel may read it in one go
            crc, pages, pos, aligned = 0, array("I"), 0, True
            while pos < pf.size:
                data = os.pread(pf.fd, chunk, pos)  # chunk: a whole number of CHECK_PAGEs
                if not data:
                    break
                crc = int(google_crc32c.extend(crc, data))
                aligned = aligned and pos % CHECK_PAGE == 0  # a short read mid-file: pages unknown
                pages.extend(page_crcs(data))
                pos += len(data)
            if pf.crc is not None and (pos != pf.size or crc != pf.crc):
                self.discard(h)
                raise CorruptEntry(h, self.directory)
            if pf.crc is not None and aligned:
                with self._files_lock:
                    self._pages[h] = pages
                    while len(self._pages) > _PAGE_TABLES:
                        self._pages.popitem(last=False)
            return True
        finally:
            self._release_file(pf)

    def _open_file(self, h: bytes, nowait: bool) -> _PackFile | bytes | None:
        """The open file of cached object `h` (one more user: _release_file it), or its bytes when it
        lives in SQLite, or None if not cached; WouldBlock with `nowait` unless already open."""
        with self._files_lock:
            pf = self._files.get(h)
            if pf is not None and time.monotonic() - pf.checked < _FD_RECHECK:
                self._files.move_to_end(h)
                pf.users += 1
                return pf
        if nowait:
            raise WouldBlock()
        value, tag = self._cache.get(h, default=None, read=True, tag=True, retry=True)
        if value is None:
            self._forget_file(h)
            return None
        if isinstance(value, bytes):  # small objects live in SQLite
            return value
        with value:
            pf = _PackFile(os.dup(value.fileno()), os.fstat(value.fileno()).st_size, tag)
        pf.users = 1
        with self._files_lock:
            old = self._files.pop(h, None)
            self._files[h] = pf
            gone = [old] if old is not None else []
            while len(self._files) > _FD_MAX:
                gone.append(self._files.popitem(last=False)[1])
            for g in gone:
                g.dead = True
                if not g.users:
                    os.close(g.fd)
        return pf

    def _release_file(self, pf: _PackFile) -> None:
        with self._files_lock:
            pf.users -= 1
            if pf.dead and not pf.users:
                os.close(pf.fd)

    def _forget_file(self, h: bytes) -> None:
        with self._files_lock:
            pf = self._files.pop(h, None)
            if pf is not None:
                pf.dead = True
                if not pf.users:
                    os.close(pf.fd)

    def discard(self, h: bytes) -> None:
        """Drop object `h` from the cache (a slice of it failed its check)."""
        self._forget_file(h)
        with self._files_lock:
            self._pages.pop(h, None)
        self._cache.delete(h, retry=True)

    # -- content-addressed objects (blocks, trees) ---------------------------------

    def get(self, h: bytes) -> bytes | None:
        """The bytes of a cached object, checked against their checksum; None if not cached.

        Raises CorruptEntry (after dropping the entry) when the bytes on disk are damaged.
        """
        # read=True: a large value comes back as an open file, read here after diskcache's
        # transaction (which holds the shard's write lock to update the LRU order) has ended.
        value, tag = self._cache.get(h, default=None, read=True, tag=True, retry=True)
        if value is None:
            return None
        if isinstance(value, bytes):
            data = value
        else:
            with value:
                data = value.read()
        # An entry written before checksums existed (no tag) is checked against its own hash.
        if not (digest(data) == h if tag is None else checksum(data) == tag):
            self._cache.delete(h, retry=True)
            raise CorruptEntry(h, self.directory)
        return data

    def put(self, h: bytes, data: bytes) -> None:
        """Insert an object the caller has verified against `h`, with the checksum of its bytes."""
        crc = checksum(data)
        if len(data) >= _FILE_MIN:
            # diskcache writes a large `bytes` value by iterating io.BytesIO(value): line by line,
            # about 16,000 write() calls for 4 MiB of random data (28 % of the daemon's samples
            # in a cold read). As a file-like value it goes in 4 MiB chunks (no copy for <= 4 MiB).
            self._cache.set(h, io.BytesIO(data), read=True, tag=crc, retry=True)
        else:
            self._cache.set(h, data, tag=crc, retry=True)

    # -- write-behind (inserts off the reader's critical path) ----------------------------

    def set_write_behind(self, max_bytes: int, threads: int = 2) -> None:
        """Let put_later() queue up to `max_bytes` of objects for background threads."""
        with self._behind_cv:
            self._behind_max = max_bytes
            if max_bytes > 0 and self._behind_pool is None:
                self._behind_pool = ThreadPoolExecutor(threads, thread_name_prefix="fsmount-cache-writer")

    def put_later(self, h: bytes, data: bytes, done: Callable[[], None] | None = None) -> None:
        """put() on a background thread; `done` runs once the object is in (or failed to go in).

        Blocks the caller while the queue is full (so fetching slows down to the disk's pace
        rather than growing memory); with write-behind off it is a plain put().
        """
        with self._behind_cv:
            pool = self._behind_pool
            if pool is not None:
                while self._behind_bytes and self._behind_bytes + len(data) > self._behind_max:
                    self._behind_cv.wait()
                self._behind_bytes += len(data)
        if pool is None:
            try:
                self.put(h, data)
            finally:
                if done is not None:
                    done()
            return
        pool.submit(self._put_behind, h, data, done)

    def _put_behind(self, h: bytes, data: bytes, done: Callable[[], None] | None) -> None:
        try:
            self.put(h, data)
        except Exception as e:  # the reader has its verified bytes already; only the cache misses out
            log.warning("could not write object %s to the cache: %s", h.hex(), e)
        finally:
            with self._behind_cv:
                self._behind_bytes -= len(data)
                self._behind_cv.notify_all()
            if done is not None:
                done()

    def flush(self) -> None:
        """Wait until every put_later() is in the cache."""
        with self._behind_cv:
            while self._behind_bytes:
                self._behind_cv.wait()

    def __contains__(self, h: bytes) -> bool:
        return h in self._cache

    # -- immutable named metadata (finalized version records) ------------------------

    def get_meta(self, kind: str, name: str) -> bytes | None:
        return self._cache.get(_meta_key(kind, name), default=None, retry=True)

    def put_meta(self, kind: str, name: str, data: bytes) -> None:
        self._cache.set(_meta_key(kind, name), data, retry=True)

    # -- housekeeping -------------------------------------------------------------------

    def volume(self) -> int:
        """Bytes on disk used by the cache."""
        return self._cache.volume()

    def __len__(self) -> int:
        return len(self._cache)

    def clear(self) -> int:
        return self._cache.clear(retry=True)

    def close(self) -> None:
        with self._files_lock:
            files, self._files = list(self._files.values()), OrderedDict()
        for pf in files:
            pf.dead = True
            if not pf.users:
                os.close(pf.fd)
        self.flush()
        pool, self._behind_pool = self._behind_pool, None
        if pool is not None:
            pool.shutdown(wait=True)
        self._cache.close()
