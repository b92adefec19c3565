"""Materialise a version's tree as a local folder, block by block through the shared cache."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import stat
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsmount.cache.fetcher import ObjectReader
from fsmount.format.objects import DirEntry, FileEntry, SymlinkEntry
from fsmount.format.tree_edit import walk_tree

log = logging.getLogger(__name__)

SPECIAL_BITS = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


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

    Modes follow copy_mode(); a read-only copy's top folder becomes 0555 too.
    """
    target.mkdir(parents=True, exist_ok=True)
    files: list[tuple[Path, FileEntry]] = []
    dirs: list[tuple[Path, DirEntry]] = []
    for path, e in walk_tree(reader.tree, root):
        dest = target / path
        if isinstance(e, DirEntry):
            dest.mkdir(exist_ok=True)
            dirs.append((dest, e))
        elif isinstance(e, SymlinkEntry):
            os.symlink(e.target, dest)
            os.utime(dest, ns=(e.mtime_ns, e.mtime_ns), follow_symlinks=False)
        else:
            files.append((dest, e))

    def write_block(dest: Path, h: bytes, off: int, length: int, file_off: int, create: bool) -> None:
        data = reader.read(h)
        view = memoryview(data)[off : off + length]
        # One open per block keeps the number of open files bounded by the worker count.
        flags = os.O_WRONLY | os.O_NOFOLLOW | os.O_CLOEXEC | (os.O_CREAT | os.O_TRUNC if create else 0)
        fd = os.open(dest, flags, 0o600)
        try:
            while view:
                n = os.pwrite(fd, view, file_off)
                view, file_off = view[n:], file_off + n
        finally:
            os.close(fd)
        if progress:
            progress(length)

    total = 0
    with ThreadPoolExecutor(workers, thread_name_prefix="get") as pool:
        futures = []
        for dest, e in files:
            total += e.size
            spans = list(e.spans())
            if len(spans) == 1:  # the common small file: created and written by its one task
                futures.append(pool.submit(write_block, dest, *spans[0], True))
                continue
            fd = os.open(dest, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
            try:  # empty files, and multi-block files sized up front
                os.ftruncate(fd, e.size)
            finally:
                os.close(fd)
            futures.extend(pool.submit(write_block, dest, *span, False) for span in spans)
        for fut in futures:
            fut.result()
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
    """shutil.rmtree that also removes a read-only copy (its folders are not writable, even by us)."""
    _owner_writable(path)
    for dirpath, dirnames, _ in os.walk(path):  # top down: each folder is writable before it is emptied
        for name in dirnames:
            _owner_writable(os.path.join(dirpath, name))
    shutil.rmtree(path)


def clear_folder(folder: Path) -> None:
    """Remove everything inside `folder` (not the folder itself)."""
    _owner_writable(folder)
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            remove_tree(child)
        else:
            with contextlib.suppress(FileNotFoundError):
                child.unlink()
