"""A local folder against a version: every file there with the right bytes (or size), nothing more."""

from __future__ import annotations

import os
import stat
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fsmount.cache.fetcher import ObjectReader
from fsmount.commit.uploader import file_sha256
from fsmount.errors import UsageError
from fsmount.format.objects import DirEntry, SymlinkEntry
from fsmount.format.tree_edit import walk_tree


@dataclass
class FolderReport:
    """Paths of the version missing from the folder, there but different, and in the folder only."""

    checked: int = 0
    missing: list[str] = field(default_factory=list)
    different: list[str] = field(default_factory=list)
    extra: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not (self.missing or self.different or self.extra)

    def lines(self) -> list[str]:
        return ([f"missing   {p}" for p in self.missing] + [f"different {p}" for p in self.different]
                + [f"extra     {p}" for p in self.extra])


def _local_paths(folder: Path) -> set[str]:
    """Every file and symlink under `folder`, relative, without recursion."""
    found: set[str] = set()
    stack = [""]
    while stack:
        rel = stack.pop()
        with os.scandir(folder / rel if rel else folder) as it:
            for d in it:
                p = f"{rel}/{d.name}" if rel else d.name
                if d.is_dir(follow_symlinks=False):
                    stack.append(p)
                else:
                    found.add(p)
    return found


def compare_folder(reader: ObjectReader, root: bytes, folder: str | os.PathLike[str],
                   size_only: bool = False, workers: int = 8) -> FolderReport:
    """Compare `folder` with the tree `root`: by SHA-256 of every file, or only by size."""
    base = Path(folder)
    if not base.is_dir():
        raise UsageError(f"{base} is not a folder")
    report = FolderReport()
    local = _local_paths(base)
    to_hash: list[tuple[str, bytes]] = []
    for path, e in walk_tree(reader.tree, root):
        if isinstance(e, DirEntry):
            continue
        report.checked += 1
        local.discard(path)
        try:
            st = os.lstat(base / path)
        except OSError:
            report.missing.append(path)
            continue
        if isinstance(e, SymlinkEntry):
            if not stat.S_ISLNK(st.st_mode) or os.readlink(base / path) != e.target:
                report.different.append(path)
        elif not stat.S_ISREG(st.st_mode) or st.st_size != e.size:
            report.different.append(path)
        elif not size_only and e.sha256:  # an external file added without --hash: by size only
            to_hash.append((path, e.sha256))

    def same(item: tuple[str, bytes]) -> bool:
        try:
            return file_sha256(str(base / item[0])) == item[1]
        except OSError:
            return False

    with ThreadPoolExecutor(max(1, workers)) as pool:
        for (path, _), ok in zip(to_hash, pool.map(same, to_hash), strict=True):
            if not ok:
                report.different.append(path)
    report.different.sort()
    report.extra = sorted(local)
    return report
