"""Cut files into blocks, hash them, and upload the blocks the store does not have, in parallel."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from fsmount.commit.locks import Lock
from fsmount.errors import FsmountError, UsageError
from fsmount.format.hashing import digest, object_key
from fsmount.format.objects import FileEntry
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

DEFAULT_BLOCK_SIZE = 4 * 2**20
HEAD_FIRST = 256 * 1024  # blocks at least this big are HEADed before a PUT: dedup saves the body


@dataclass
class UploadStats:
    blocks_uploaded: int = 0
    bytes_uploaded: int = 0
    blocks_deduplicated: int = 0
    bytes_hashed: int = 0
    blocks_repaired: int = 0


@dataclass(frozen=True, slots=True)
class SourceFile:
    """A local file to turn into a FileEntry at `dest` (a path inside the dataset)."""

    dest: str
    src: str
    size: int
    mode: int
    mtime_ns: int


def source_file(dest: str, src: str) -> SourceFile:
    st = os.stat(src, follow_symlinks=False)
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"{src} is not a regular file")
    return SourceFile(dest, src, st.st_size, stat.S_IMODE(st.st_mode), st.st_mtime_ns)


def file_sha256(path: str, chunk: int = 8 * 2**20) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            h.update(data)
    return h.digest()


class Uploader:
    """Uploads many files at once: block-level parallelism, so one huge file is not one stream."""

    def __init__(
        self,
        store: ObjectStore,
        origin: str,
        *,
        block_size: int = DEFAULT_BLOCK_SIZE,
        workers: int = 16,
        progress: Callable[[int], None] | None = None,
        lock: Lock | None = None,
        suspect: set[bytes] | None = None,
    ) -> None:
        """`lock`: the writer lock, checked before every block (a lost lock stops the upload).
        `suspect`: hashes a verify found damaged; they are written again (replacing what the store
        has) and removed from the set."""
        self.store = store
        self.lock = lock
        self.suspect = suspect if suspect is not None else set()
        self.origin = origin
        self.block_size = block_size
        self.workers = workers
        self.progress = progress
        self.stats = UploadStats()
        self._lock = threading.Lock()
        self._known: set[bytes] = set()

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def put_block(self, h: bytes, data: bytes | memoryview) -> None:
        """Store one block unless the store (or this run) already has it. `data` hashes to `h`."""
        if self.lock is not None:
            self.lock.check()
        with self._lock:
            if h in self._known:
                self.stats.blocks_deduplicated += 1
                return
            repair = h in self.suspect
        key = object_key(h)
        if repair:  # the store's copy may be damaged in a way a HEAD cannot see: replace it
            self.store.replace(key, bytes(data))
            with self._lock:
                self._known.add(h)
                self.suspect.discard(h)
                self.stats.blocks_repaired += 1
                self.stats.blocks_uploaded += 1
                self.stats.bytes_uploaded += len(data)
            return
        # A present object counts only if it is the one meant (size, and the store's checksum
        # where it keeps one): a partial object left by an interrupted upload is written again.
        if len(data) >= HEAD_FIRST and self.store.holds(key, len(data), h):
            created = False
        else:
            created = self.store.put(key, bytes(data))
        with self._lock:
            self._known.add(h)
            if created:
                self.stats.blocks_uploaded += 1
                self.stats.bytes_uploaded += len(data)
            else:
                self.stats.blocks_deduplicated += 1

    def _block(self, f: SourceFile, index: int) -> bytes:
        fd = os.open(f.src, os.O_RDONLY)
        try:
            length = min(self.block_size, f.size - index * self.block_size)
            data = os.pread(fd, length, index * self.block_size)
        finally:
            os.close(fd)
        if len(data) != length:
            raise UsageError(f"{f.src} changed while it was being read")
        h = digest(data)
        self.put_block(h, data)
        self._count(bytes_hashed=len(data))
        if self.progress:
            self.progress(len(data))
        return h

    def _small(self, f: SourceFile) -> FileEntry:
        with open(f.src, "rb", buffering=0) as fh:
            data = fh.read(f.size + 1)
        if len(data) != f.size:
            raise UsageError(f"{f.src} changed while it was being read")
        h = digest(data)
        if data:
            self.put_block(h, data)
        self._count(bytes_hashed=len(data))
        if self.progress:
            self.progress(len(data))
        return FileEntry(
            f.dest.rsplit("/", 1)[-1],
            f.mode,
            f.mtime_ns,
            f.size,
            h,
            self.block_size,
            (h,) if data else (),
            self.origin,
        )

    def upload(self, files: Iterable[SourceFile]) -> Iterator[tuple[SourceFile, FileEntry]]:
        """Upload every file; yield (file, entry) in input order as each completes."""
        with ThreadPoolExecutor(self.workers, thread_name_prefix="upload") as pool:
            pending: list[
                tuple[SourceFile, list[Future[bytes]] | Future[FileEntry], Future[bytes] | None]
            ] = []
            try:
                for f in files:
                    if f.size <= self.block_size:
                        pending.append((f, pool.submit(self._small, f), None))
                    else:
                        n = -(-f.size // self.block_size)
                        blocks = [pool.submit(self._block, f, i) for i in range(n)]
                        pending.append((f, blocks, pool.submit(file_sha256, f.src)))
                    # Bound the look-ahead so progress and memory stay steady on huge inputs.
                    while len(pending) > 4 * self.workers:
                        yield self._finish(*pending.pop(0))
                while pending:
                    yield self._finish(*pending.pop(0))
            except BaseException:
                for _, futs, sha in pending:
                    for fut in futs if isinstance(futs, list) else [futs]:
                        fut.cancel()
                    if sha:
                        sha.cancel()
                raise

    def _finish(
        self, f: SourceFile, work: list[Future[bytes]] | Future[FileEntry], sha: Future[bytes] | None
    ) -> tuple[SourceFile, FileEntry]:
        try:
            if not isinstance(work, list):
                return f, work.result()
            blocks = tuple(fut.result() for fut in work)
            assert sha is not None
            entry = FileEntry(
                f.dest.rsplit("/", 1)[-1],
                f.mode,
                f.mtime_ns,
                f.size,
                sha.result(),
                self.block_size,
                blocks,
                self.origin,
            )
            return f, entry
        except FileNotFoundError:
            raise UsageError(f"{f.src} disappeared while it was being uploaded") from None
        except OSError as e:
            raise FsmountError(f"cannot read {f.src}: {e.strerror}") from None
