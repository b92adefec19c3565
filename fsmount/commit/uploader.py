"""Cut files into blocks (small ones packed together), hash them, upload what the store lacks, in parallel."""

from __future__ import annotations

import hashlib
import logging
import os
import stat
import threading
from collections import deque
from collections.abc import Callable, Iterable, Iterator
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass

from fsmount.commit.locks import Lock
from fsmount.commit.packer import PackBuilder, Packing, Reuse, object_of, packing, tree_key
from fsmount.errors import FsmountError, UsageError
from fsmount.format.hashing import digest, object_key
from fsmount.format.objects import BlockRef, FileEntry
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
    files_packed: int = 0  # small files written into packs by this run
    packs_written: int = 0  # pack objects this run stored (a pack of one content is a plain block)
    files_reused: int = 0  # small files whose content a parent (or this run) already stored


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
        pack: Packing | None = None,
        reuse: Reuse | None = None,
    ) -> None:
        """`lock`: the writer lock, checked before every block (a lost lock stops the upload).
        `suspect`: hashes a verify found damaged; they are written again (replacing what the store
        has) and removed from the set. `pack`: which files go into pack objects (default: the
        configuration's, fsmount.config). `reuse`: contents already stored (commit/packer.py,
        content_index): a small file with one of them takes those locators instead of a pack."""
        self.store = store
        self.lock = lock
        self.suspect = suspect if suspect is not None else set()
        self.origin = origin
        self.block_size = block_size
        self.workers = workers
        self.progress = progress
        self.stats = UploadStats()
        self.pack = pack if pack is not None else packing()
        self.reuse = reuse or {}
        self._lock = threading.Lock()
        self._known: set[bytes] = set()

    def _count(self, **inc: int) -> None:
        with self._lock:
            for k, v in inc.items():
                setattr(self.stats, k, getattr(self.stats, k) + v)

    def put_block(self, h: bytes, data: bytes | memoryview) -> bool:
        """Store one block unless the store (or this run) already has it. `data` hashes to `h`.
        True if this call wrote it."""
        if self.lock is not None:
            self.lock.check()
        with self._lock:
            if h in self._known:
                self.stats.blocks_deduplicated += 1
                return False
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
            return True
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
        return created

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
        """Upload every file; yield (file, entry) as each completes: files with their own blocks in
        input order, then the packed ones in tree order, each once the pack holding it is stored."""
        small: list[SourceFile] = []
        with ThreadPoolExecutor(self.workers, thread_name_prefix="upload") as pool:
            yield from self._upload_each(pool, files, small)
            yield from self._upload_packed(pool, sorted(small, key=lambda f: tree_key(f.dest)))

    def _upload_each(self, pool: ThreadPoolExecutor, files: Iterable[SourceFile],
                     small: list[SourceFile]) -> Iterator[tuple[SourceFile, FileEntry]]:
        """Files that get their own blocks; those to pack are put aside in `small`."""
        pending: list[tuple[SourceFile, list[Future[bytes]] | Future[FileEntry], Future[bytes] | None]] = []
        try:
            for f in files:
                if self.pack.packs(f.size):
                    small.append(f)
                elif f.size <= self.block_size:
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

    def _read_small(self, f: SourceFile) -> tuple[bytes, bytes]:
        """(content, its SHA-256) of a file to pack."""
        try:
            with open(f.src, "rb", buffering=0) as fh:
                data = fh.read(f.size + 1)
        except FileNotFoundError:
            raise UsageError(f"{f.src} disappeared while it was being uploaded") from None
        except OSError as e:
            raise FsmountError(f"cannot read {f.src}: {e.strerror}") from None
        if len(data) != f.size:
            raise UsageError(f"{f.src} changed while it was being read")
        self._count(bytes_hashed=len(data))
        if self.progress:
            self.progress(len(data))
        return data, digest(data)

    def _upload_packed(self, pool: ThreadPoolExecutor,
                       files: list[SourceFile]) -> Iterator[tuple[SourceFile, FileEntry]]:
        """Fill packs in the order given; yield each file's entry once its pack is stored.

        A content a parent already stores (`reuse`) or an earlier pack of this run holds takes
        that locator. Reads run ahead on the pool (bounded), at most two packs upload at once.
        """
        done: dict[bytes, tuple[int, tuple[BlockRef, ...]]] = {}  # contents stored by this run
        reads: deque[tuple[SourceFile, Future[tuple[bytes, bytes]]]] = deque()
        uploads: deque[tuple[Future[None], list[tuple[SourceFile, bytes]]]] = deque()
        builder, members = PackBuilder(), list[tuple[SourceFile, bytes]]()
        todo = iter(files)

        def entry(f: SourceFile, sha: bytes, located: tuple[int, tuple[BlockRef, ...]]) -> FileEntry:
            return FileEntry(f.dest.rsplit("/", 1)[-1], f.mode, f.mtime_ns, f.size, sha, located[0],
                             located[1], self.origin)

        def seal() -> None:
            nonlocal builder, members
            h, data, refs = builder.seal(self.block_size)
            for sha, ref in refs.items():
                done[sha] = (self.block_size, (ref,))
            uploads.append((pool.submit(self._put_pack, h, data, len(refs) > 1), members))
            builder, members = PackBuilder(), []

        def finished(wait_all: bool) -> Iterator[tuple[SourceFile, FileEntry]]:
            while uploads and (wait_all or len(uploads) > 1 or uploads[0][0].done()):
                fut, batch = uploads.popleft()
                fut.result()
                for f, sha in batch:
                    self._count(files_packed=1)
                    yield f, entry(f, sha, done[sha])

        try:
            while True:
                while len(reads) < 4 * self.workers and (f := next(todo, None)) is not None:
                    reads.append((f, pool.submit(self._read_small, f)))
                if not reads:
                    break
                f, fut = reads.popleft()
                data, sha = fut.result()
                known = self.reuse.get(sha)
                if known is not None and not any(object_of(b) in self.suspect for b in known[1]):
                    self._count(files_reused=1)
                    yield f, entry(f, sha, known)
                    continue
                if sha in done:  # the same bytes as a file of a pack already sealed
                    self._count(files_reused=1)
                    yield f, entry(f, sha, done[sha])
                    continue
                full = builder.size + len(data) > self.pack.target
                if builder.size and sha not in builder.offsets and full:
                    seal()
                builder.add(sha, data)
                members.append((f, sha))
                yield from finished(wait_all=False)
            if members:
                seal()
            yield from finished(wait_all=True)
        except BaseException:
            for _, fut in reads:
                fut.cancel()
            for up, _ in uploads:
                up.cancel()
            raise

    def _put_pack(self, h: bytes, data: bytes, is_pack: bool) -> None:
        if self.put_block(h, data) and is_pack:
            self._count(packs_written=1)

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
