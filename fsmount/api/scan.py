"""Local folders against a dataset: scan one; turn it, or its differences to a tree, into journal events."""

from __future__ import annotations

import fnmatch
import os
import stat
from collections.abc import Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fsmount.api.local_walk import walk
from fsmount.cache.fetcher import ObjectReader
from fsmount.commit.uploader import file_sha256
from fsmount.errors import UsageError
from fsmount.format.objects import EMPTY_TREE_HASH, DirEntry, Entry, FileEntry, LinkEntry, SymlinkEntry
from fsmount.format.tree_edit import lookup, split_path, walk_tree

Event = dict[str, Any]


@dataclass
class SyncResult:
    """What `sync` changed, path by path."""

    added: list[str]
    modified: list[str]
    removed: list[str]


def scan(folder: Path, dest: str) -> Iterator[tuple[str, str, str]]:
    """(kind, dataset path, source path) for everything under `folder`; symlinks are not followed.

    Kinds are 'file', 'symlink' and 'dir'; every directory is a 'dir' (its mode and mtime are
    recorded), `folder` itself too when `dest` is not the root. Other file types are skipped.
    """
    prefix = "/".join(split_path(dest))
    for dirpath, dirnames, filenames in walk(folder):
        for name in dirnames + filenames:
            _check_utf8(dirpath, name)
        rel = os.path.relpath(dirpath, folder)
        rel = "" if rel == "." else rel
        base = "/".join(p for p in (prefix, rel) if p)
        for d in list(dirnames):
            full = os.path.join(dirpath, d)
            if os.path.islink(full):
                dirnames.remove(d)
                yield "symlink", f"{base}/{d}".lstrip("/"), full
        if base:
            yield "dir", base, dirpath
        for f in filenames:
            full = os.path.join(dirpath, f)
            mode = os.lstat(full).st_mode
            kind = "symlink" if stat.S_ISLNK(mode) else "file" if stat.S_ISREG(mode) else None
            if kind:
                yield kind, f"{base}/{f}".lstrip("/"), full


def _check_utf8(dirpath: str, name: str) -> None:
    try:
        name.encode("utf-8")
    except UnicodeEncodeError:
        shown = os.path.join(dirpath, name).encode("utf-8", "surrogateescape").decode("utf-8", "replace")
        raise UsageError(f"{shown}: the file name is not valid UTF-8; rename it first") from None


def folder_bytes(folder: str | os.PathLike[str]) -> int:
    """Bytes of the regular files under `folder` (what a sync of it reads at most)."""
    total = 0
    for dirpath, _, filenames in walk(folder):
        for f in filenames:
            st = os.lstat(os.path.join(dirpath, f))
            if stat.S_ISREG(st.st_mode):
                total += st.st_size
    return total


def add_events(src: Path, dest: str, wildcard: str | None, recursive: bool) -> list[Event]:
    """Journal 'add' events staging `src` (a file, symlink, or a folder's contents) under `dest`."""
    if src.is_dir() and not src.is_symlink():
        events = []
        for kind, dpath, spath in scan(src, dest):
            rel = dpath[len(dest) :].strip("/")
            if not recursive and ("/" in rel or (kind == "dir" and rel and os.listdir(spath))):
                continue  # the top level only; a sub-folder only if empty (its contents are left out)
            if wildcard and kind != "dir" and not fnmatch.fnmatch(os.path.basename(spath), wildcard):
                continue
            events.append({"op": "add", "kind": kind, "path": dpath, "src": spath})
        return events
    kind = "symlink" if src.is_symlink() else "file"
    if kind == "file" and not src.is_file():
        raise UsageError(f"{src} is not a regular file, folder or symlink")
    return [{"op": "add", "kind": kind, "path": "/".join(p for p in (dest, src.name) if p), "src": str(src)}]


def entries_staged(events: list[Event]) -> int:
    """Files, symlinks and empty directories `events` stage (a folder's own attributes don't count)."""
    parents = {e["path"].rpartition("/")[0] for e in events}
    return sum(1 for e in events if e.get("kind") != "dir" or e["path"] not in parents)


def compare(
    reader: ObjectReader, base: bytes, prefix: str, folder: Path, suspect: frozenset[bytes] = frozenset()
) -> tuple[SyncResult, list[Event]]:
    """What makes the tree `base` at `prefix` equal to `folder`: the changes, and the events staging them.

    Directories whose mode or mtime differ are staged too (not listed as changes). An unchanged
    file with a block in `suspect` (found damaged by a verify) is staged again, so that its
    blocks are uploaded again, without being listed as modified.
    """
    sub = base
    top: DirEntry | None = None
    if prefix:
        e = lookup(reader.tree, base, prefix)
        top = e if isinstance(e, DirEntry) else None
        sub = top.tree if top is not None else EMPTY_TREE_HASH
    entries = list(walk_tree(reader.tree, sub))
    old = {p: e for p, e in entries if not isinstance(e, DirEntry | LinkEntry)}  # sync keeps links
    old_dirs = {p: e for p, e in entries if isinstance(e, DirEntry)}
    local = list(scan(folder.absolute(), ""))

    def full(p: str) -> str:
        return f"{prefix}/{p}" if prefix else p

    result = SyncResult([], [], [])
    local_paths = {p for _, p, _ in local}
    events: list[Event] = []
    for p in sorted(old):
        if p not in local_paths:
            result.removed.append(full(p))
            events.append({"op": "delete", "path": full(p)})
    if prefix and not _same_dir_attrs(top, str(folder.absolute())):
        events.append({"op": "add", "kind": "dir", "path": prefix, "src": str(folder.absolute())})
    unchanged = _unchanged_files(old, local)
    for kind, p, s in local:
        if p in unchanged:
            prev = old[p]
            if suspect and isinstance(prev, FileEntry) and any(
                    (b if isinstance(b, bytes) else b[0]) in suspect for b in prev.blocks):
                events.append({"op": "add", "kind": "file", "path": full(p), "src": s})
            continue
        if _same_symlink(kind, old.get(p), s):
            continue
        if kind == "dir":
            if not _same_dir_attrs(old_dirs.get(p), s):
                events.append({"op": "add", "kind": "dir", "path": full(p), "src": s})
            continue
        (result.modified if p in old else result.added).append(full(p))
        events.append({"op": "add", "kind": kind, "path": full(p), "src": s})
    for paths in (result.added, result.modified, result.removed):
        paths.sort()
    return result, events


def _unchanged_files(old: Mapping[str, Entry], local: list[tuple[str, str, str]]) -> set[str]:
    """Local files whose bytes and mode equal the stored entry's (same-size files are hashed)."""
    same_size: list[tuple[str, str, FileEntry]] = []
    for kind, p, s in local:
        prev = old.get(p)
        if kind == "file" and isinstance(prev, FileEntry) and (prev.size, prev.mode) == _size_mode(s):
            same_size.append((p, s, prev))  # a chmod alone is a modification too
    with ThreadPoolExecutor(8) as pool:
        hashes = pool.map(lambda x: file_sha256(x[1]), same_size)
        return {p for (p, _, prev), h in zip(same_size, hashes, strict=True) if h == prev.sha256}


def _same_dir_attrs(prev: DirEntry | None, src: str) -> bool:
    st = os.stat(src)
    return prev is not None and (prev.mode & 0o7777, prev.mtime_ns) == (
        stat.S_IMODE(st.st_mode), st.st_mtime_ns
    )


def _same_symlink(kind: str, prev: Entry | None, src: str) -> bool:
    return kind == "symlink" and isinstance(prev, SymlinkEntry) and prev.target == os.readlink(src)


def _size_mode(path: str) -> tuple[int, int]:
    st = os.stat(path)
    return st.st_size, stat.S_IMODE(st.st_mode)
