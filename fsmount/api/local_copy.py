"""Materialise a version's tree as a local folder, block by block through the shared cache."""

from __future__ import annotations

import contextlib
import errno
import hashlib
import logging
import os
import stat
import threading
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsmount.api.local_walk import walk
from fsmount.cache.external import UNHASHED
from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import FsError, IntegrityError, UsageError
from fsmount.format.objects import DirEntry, FileEntry, LinkEntry, SymlinkEntry
from fsmount.format.tree_edit import walk_tree

log = logging.getLogger(__name__)

SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX
PATH_MAX = 4096  # Linux: a path given to a system call, its terminating NUL included


def copy_mode(mode: int, *, is_dir: bool, read_only: bool, preserve_special_bits: bool = False) -> int:
    """The mode a copy gets for a stored mode; whoever can write to the store gains nothing from it.

    setuid, setgid and sticky are dropped unless asked for (a store saying 4755 must not give root
    a setuid file). A read-only copy is never writable by anyone: files `mode & 0o555`,
    directories `(mode & 0o555) | 0o500`. A mutable copy: files `mode & 0o777`, directories
    `(mode & 0o777) | 0o700` (the owner can always change what is inside).
    """
    special = mode & SPECIAL_BITS if preserve_special_bits else 0
    if read_only:
        return special | (mode & 0o555) | (0o500 if is_dir else 0)
    return special | (mode & 0o777) | (0o700 if is_dir else 0)


_EMPTY_SHA256 = hashlib.sha256(b"").digest()


class _FileHash:
    """The whole-file SHA-256 of a file whose blocks are written in any order by many threads.

    Blocks are hashed in file order as they arrive; a block that arrives more than `ahead`
    places early waits (its writer thread blocks), so memory stays within `ahead` blocks. Blocks
    are submitted in file order, so the one the hash waits for is already being written: no
    deadlock.
    """

    def __init__(self, expected: bytes, count: int, ahead: int) -> None:
        self.expected = expected
        self.count = count
        self.ahead = max(1, ahead)
        self.next = 0
        self.pending: dict[int, memoryview] = {}
        self.sha = hashlib.sha256()
        self.cv = threading.Condition()
        self.abandoned = False

    def feed(self, i: int, view: memoryview) -> bool:
        """Add block `i`; False from the call that completes the hash if it does not match."""
        with self.cv:
            while i - self.next > self.ahead and not self.abandoned:
                self.cv.wait()
            if self.abandoned:
                return True  # another block of this file failed; that failure is reported
            self.pending[i] = view
            before = self.next
            while self.next in self.pending:
                self.sha.update(self.pending.pop(self.next))
                self.next += 1
            self.cv.notify_all()
            if before < self.count == self.next:
                return self.sha.digest() == self.expected
            return True

    def abandon(self) -> None:
        """A block of the file failed: release every writer waiting here."""
        with self.cv:
            self.abandoned = True
            self.pending.clear()
            self.cv.notify_all()


def materialise(
    reader: ObjectReader,
    root: bytes,
    target: Path,
    *,
    read_only: bool,
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
    preserve_special_bits: bool = False,
) -> int:
    """Write every file, symlink and directory of the tree `root` under `target`; return bytes.

    Modes follow copy_mode(); a read-only copy's top folder becomes 0555 too. The tree is walked
    without recursion (any depth); a path longer than Linux's PATH_MAX (4096 bytes, the copy's
    folder included) is refused with ENAMETOOLONG before it is created, naming its first
    characters: such a version can be read through a mount, not copied with plain paths.
    """
    target.mkdir(parents=True, exist_ok=True)
    files: list[tuple[Path, FileEntry]] = []
    dirs: list[tuple[Path, DirEntry]] = []
    room = PATH_MAX - 1 - len(os.fsencode(target.absolute())) - 1
    for path, e in walk_tree(reader.tree, root):
        if len(os.fsencode(path)) > room:
            raise FsError(errno.ENAMETOOLONG, f"cannot copy {path[:60]}...: its path in {target} would be "
                          f"longer than PATH_MAX ({PATH_MAX} bytes); read it through a mount instead")
        dest = target / path
        if isinstance(e, DirEntry):
            dest.mkdir(exist_ok=True)
            dirs.append((dest, e))
        elif isinstance(e, SymlinkEntry):
            os.symlink(e.target, dest)
            os.utime(dest, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
        elif isinstance(e, LinkEntry):  # hook: an external file, read as its chunks (cache/external.py)
            files.append((dest, reader.links.register(e)))
        else:
            files.append((dest, e))

    def write_block(dest: Path, e: FileEntry, i: int, file_hash: _FileHash | None, create: bool) -> None:
        try:
            _write_block(dest, e, i, file_hash, create)
        except BaseException:
            if file_hash is not None:
                file_hash.abandon()
            raise

    def _write_block(dest: Path, e: FileEntry, i: int, file_hash: _FileHash | None, create: bool) -> None:
        h, off, length, file_off = spans[dest][i]
        rel = dest.relative_to(target)
        try:  # the object's length must fit the locator: never a short or shifted file
            view = reader.span(h, off, length, isinstance(e.blocks[i], bytes))
        except IntegrityError as err:
            raise IntegrityError(f"{rel}: {err}") from None
        # One open per block keeps the number of open files bounded by the worker count.
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(dest, flags, 0o600)
        try:
            rest, pos = view, file_off
            while rest:
                n = os.pwrite(fd, rest, pos)
                rest, pos = rest[n:], pos + n
        finally:
            os.close(fd)
        if file_hash is not None and not file_hash.feed(i, view):
            raise IntegrityError(f"{rel}: its bytes do not match the file's SHA-256 in the version")
        if progress:
            progress(length)

    total = 0
    spans = {dest: list(e.spans()) for dest, e in files}
    with ThreadPoolExecutor(workers, thread_name_prefix="get") as pool:
        futures = []
        for dest, e in files:
            total += e.size
            n = len(spans[dest])
            if n == 0 and e.sha256 != _EMPTY_SHA256:
                raise IntegrityError(f"{dest.relative_to(target)}: empty, but its SHA-256 is not empty's")
            if n == 1 and e.blocks[0] == e.sha256:
                # The file is exactly its one object (reader.span checks the length), and that object
                # is named by the file's SHA-256 and was verified against it: no second hash needed.
                futures.append(pool.submit(write_block, dest, e, 0, None, True))
                continue
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:  # empty files, and multi-block files sized up front
                os.ftruncate(fd, e.size)
            finally:
                os.close(fd)
            # hashed as the blocks are written (not an unhashed external file: its tag was checked instead)
            file_hash = _FileHash(e.sha256, n, workers) if n and e.sha256 != UNHASHED else None
            futures.extend(pool.submit(write_block, dest, e, i, file_hash, False) for i in range(n))
        try:
            for fut in futures:
                fut.result()
        except BaseException:
            for fut in futures:  # one bad file fails the copy: fetch nothing more
                fut.cancel()
            raise
    special = {"preserve_special_bits": preserve_special_bits}
    for dest, e in files:
        os.chmod(dest, copy_mode(e.mode, is_dir=False, read_only=read_only, **special))
        os.utime(dest, ns=(e.mtime_ns, e.mtime_ns))
    for dest, d in reversed(dirs):  # deepest first: a read-only parent is made after its children
        os.chmod(dest, copy_mode(d.mode, is_dir=True, read_only=read_only, **special))
        os.utime(dest, ns=(d.mtime_ns, d.mtime_ns))
    if read_only:
        os.chmod(target, 0o555)
    return total


def _owner_writable(path: str | os.PathLike[str]) -> None:
    """Give the owner back write access to a directory (read-only copies have 0555 folders)."""
    with contextlib.suppress(OSError):
        st = os.lstat(path)
        if stat.S_ISDIR(st.st_mode) and st.st_uid == os.geteuid() and not st.st_mode & stat.S_IWUSR:
            os.chmod(path, stat.S_IMODE(st.st_mode) | stat.S_IRWXU)


def remove_tree(path: str | os.PathLike[str]) -> None:
    """shutil.rmtree that also removes a read-only copy (its folders are not writable, even by us).

    Iterative (Python 3.11's os.walk and shutil.rmtree recurse): folders are made writable top down,
    then emptied and removed deepest first.
    """
    _owner_writable(path)
    folders: list[tuple[str, list[str]]] = []
    for dirpath, dirnames, filenames in walk(path):  # top down: each folder is writable before it is emptied
        for name in dirnames:
            _owner_writable(os.path.join(dirpath, name))
        links = [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]
        folders.append((dirpath, filenames + links))
    for dirpath, names in reversed(folders):
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(os.path.join(dirpath, name))
        os.rmdir(dirpath)


def clear_folder(folder: Path) -> None:
    """Remove everything inside `folder` (not the folder itself)."""
    _owner_writable(folder)
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            remove_tree(child)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()


def shared_copy(
    reader: ObjectReader,
    copies: Path,
    version_id: str,
    root: bytes,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """`copies/<id>`: a read-only copy made once per version and host, built aside and renamed in place."""
    target = copies / version_id
    complete = copies / f"{version_id}.complete"
    if complete.exists():
        return target
    tmp = copies / f".tmp-{version_id}-{uuid.uuid4().hex[:8]}"
    try:
        materialise(reader, root, tmp, read_only=True, progress=progress)
        if target.exists():
            remove_tree(target)
        tmp.rename(target)
        complete.touch()
    finally:
        if tmp.exists():
            with contextlib.suppress(OSError):
                remove_tree(tmp)
    return target


def mutable_copy(
    reader: ObjectReader,
    root: Callable[[], bytes],
    target: Path,
    overwrite: bool = False,
    progress: Callable[[int], None] | None = None,
) -> Path:
    """A writable copy in `target`; a non-empty folder is refused unless `overwrite`.

    `root` is called before anything is deleted, so a version that cannot be read leaves the folder as it was.
    """
    if target.exists() and not target.is_dir():
        raise UsageError(f"{target} exists and is not a folder")
    if target.is_dir() and any(target.iterdir()):
        if not overwrite:
            raise UsageError(f"{target} is not empty: use --overwrite to replace its contents")
        tree = root()
        clear_folder(target)
    else:
        tree = root()
    materialise(reader, tree, target, read_only=False, progress=progress)
    return target
