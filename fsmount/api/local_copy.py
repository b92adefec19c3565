"""Materialise a version's tree as a local folder through the shared cache, each object fetched once."""

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
    directories `(mode & 0o555) | 0o500`. A mutable copy: files `mode & 0o775`, directories
    `(mode & 0o775) | 0o700` (the owner can always change what is inside; a store saying 0777 or
    1777 must not let every user of the machine change root's copy; `preserve_special_bits` keeps
    every bit as stored).
    """
    special = mode & SPECIAL_BITS if preserve_special_bits else 0
    if read_only:
        return special | (mode & 0o555) | (0o500 if is_dir else 0)
    bits = 0o777 if preserve_special_bits else 0o775  # asking for the exact modes keeps o+w too
    return special | (mode & bits) | (0o700 if is_dir else 0)


_EMPTY_SHA256 = hashlib.sha256(b"").digest()


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
    first_name: dict[bytes, Path] = {}  # hard-link group -> its first name: the others are links to it
    links: list[tuple[Path, Path]] = []
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
        elif e.link is not None and e.link in first_name:
            links.append((first_name[e.link], dest))
        else:
            if e.link is not None:
                first_name[e.link] = dest
            files.append((dest, e))

    total = _fetch_and_write(reader, files, target, workers, progress)
    special = {"preserve_special_bits": preserve_special_bits}
    for dest, e in files:
        os.chmod(dest, copy_mode(e.mode, is_dir=False, read_only=read_only, **special))
        os.utime(dest, ns=(e.mtime_ns, e.mtime_ns))
    for first, dest in links:
        os.link(first, dest)
    for dest, d in reversed(dirs):  # deepest first: a read-only parent is made after its children
        os.chmod(dest, copy_mode(d.mode, is_dir=True, read_only=read_only, **special))
        os.utime(dest, ns=(d.mtime_ns, d.mtime_ns))
    if read_only:
        os.chmod(target, 0o555)
    return total


def _write_at(dest: Path, view: memoryview, pos: int) -> None:
    """Write `view` at `pos` of `dest`; one open per call keeps open files bounded by the worker count."""
    fd = os.open(dest, os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    try:
        rest = view
        while rest:
            n = os.pwrite(fd, rest, pos)
            rest, pos = rest[n:], pos + n
    finally:
        os.close(fd)


def _hash_file(path: Path) -> bytes:
    """SHA-256 of a written file, read back (from the page cache, just written)."""
    sha = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while chunk := f.read(4 * 2**20):
            sha.update(chunk)
    return sha.digest()


class _Pending:
    """The spans of one file still to be written; the job that writes its last one checks the file."""

    __slots__ = ("left", "lock")

    def __init__(self, left: int) -> None:
        self.left = left
        self.lock = threading.Lock()

    def done_one(self) -> bool:
        with self.lock:
            self.left -= 1
            return self.left == 0


def _fetch_and_write(
    reader: ObjectReader,
    files: list[tuple[Path, FileEntry]],
    target: Path,
    workers: int,
    progress: Callable[[int], None] | None,
) -> int:
    """Write the content of `files`, fetching (and reading) each object once; return the bytes written.

    The spans of every file are grouped by the object they need (a whole block, or a range of a
    pack): one job per object reads it once, from the cache or the store, and writes each span
    that uses it. Jobs run `workers` at a time, in the order the tree first needs their object. A
    file held in one span is checked against its SHA-256 in memory (not at all when the object is
    the file: named by that SHA-256 and verified already); a file of several spans is read back
    and hashed once its last span is written.
    """
    users: dict[bytes, list[tuple[Path, FileEntry, int, int, int, bool]]] = {}
    pending: dict[Path, _Pending] = {}
    total = 0
    for dest, e in files:
        total += e.size
        spans = list(e.spans())
        # created (empty) and sized up front: spans then land at their offsets in any order
        fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
        try:
            if len(spans) > 1:
                os.ftruncate(fd, e.size)
        finally:
            os.close(fd)
        if not spans:
            if e.sha256 != _EMPTY_SHA256:
                raise IntegrityError(f"{dest.relative_to(target)}: empty, but its SHA-256 is not empty's")
            continue
        pending[dest] = _Pending(len(spans))
        for i, (h, off, length, file_off) in enumerate(spans):
            users.setdefault(h, []).append((dest, e, off, length, file_off, isinstance(e.blocks[i], bytes)))

    def write_object(h: bytes) -> None:
        spans = users[h]
        try:
            data = reader.read(h)
        except IntegrityError as err:
            raise IntegrityError(f"{spans[0][0].relative_to(target)}: {err}") from None
        for dest, e, off, length, file_off, whole in spans:
            rel = dest.relative_to(target)
            try:  # the object's length must fit the locator: never a short or shifted file
                reader.check_span(h, len(data), off, length, whole)
            except IntegrityError as err:
                raise IntegrityError(f"{rel}: {err}") from None
            view = memoryview(data)[off:off + length]
            single = length == e.size
            hashed = e.sha256 != UNHASHED  # an external file added without --hash: its tag was checked
            if (hashed and single and not (whole and h == e.sha256)
                    and hashlib.sha256(view).digest() != e.sha256):
                raise IntegrityError(f"{rel}: its bytes do not match the file's SHA-256 in the version")
            _write_at(dest, view, file_off)
            if progress:
                progress(length)
            if pending[dest].done_one() and hashed and not single and _hash_file(dest) != e.sha256:
                raise IntegrityError(f"{rel}: its bytes do not match the file's SHA-256 in the version")

    with ThreadPoolExecutor(workers, thread_name_prefix="get") as pool:
        futures = [pool.submit(write_object, h) for h in users]
        try:
            for fut in futures:
                fut.result()
        except BaseException:
            for fut in futures:  # one bad file fails the copy: fetch nothing more
                fut.cancel()
            raise
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
