"""Materialise a version's tree as a local folder, block by block through the shared cache."""

from __future__ import annotations

import contextlib
import logging
import os
import shutil
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import UsageError
from fsmount.format.objects import DirEntry, FileEntry, SymlinkEntry
from fsmount.format.tree_edit import walk_tree

log = logging.getLogger(__name__)


def materialise(
    reader: ObjectReader,
    root: bytes,
    target: Path,
    *,
    read_only: bool,
    workers: int = 16,
    progress: Callable[[int], None] | None = None,
) -> int:
    """Write every file, symlink and directory of the tree `root` under `target`; return bytes."""
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
        flags = os.O_WRONLY | (os.O_CREAT | os.O_TRUNC if create else 0)
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
            with open(dest, "wb") as f:  # empty files, and multi-block files sized up front
                f.truncate(e.size)
            futures.extend(pool.submit(write_block, dest, *span, False) for span in spans)
        for fut in futures:
            fut.result()
    for dest, e in files:
        mode = e.mode & ~0o222 if read_only else e.mode
        os.chmod(dest, mode)
        os.utime(dest, ns=(e.mtime_ns, e.mtime_ns))
    for dest, d in reversed(dirs):
        os.chmod(dest, d.mode | 0o700)
        os.utime(dest, ns=(d.mtime_ns, d.mtime_ns))
    return total


def clear_folder(folder: Path) -> None:
    """Remove everything inside `folder` (not the folder itself)."""
    for child in folder.iterdir():
        if child.is_dir() and not child.is_symlink():
            shutil.rmtree(child)
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
            shutil.rmtree(target)
        tmp.rename(target)
        complete.touch()
    finally:
        if tmp.exists():
            shutil.rmtree(tmp, ignore_errors=True)
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
