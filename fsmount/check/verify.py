"""Verify one version: every tree and block it needs is in the store and hashes right."""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import ObjectNotFound
from fsmount.format.hashing import digest, object_key
from fsmount.format.objects import DirEntry, Entry, FileEntry, VersionRecord
from fsmount.store.base import ObjectStore


def verify_version(
    store: ObjectStore, reader: ObjectReader, record: VersionRecord, workers: int = 16
) -> list[str]:
    """Re-hash the stored bytes of every tree and block of `record`; list what is missing or corrupt.

    The structure is read through `reader` (so through the cache); every object's bytes are
    fetched from the store itself, never from the cache.
    """
    problems = [p for p in (_check_tree(store, record.root, "root"),) if p]
    files: list[tuple[str, FileEntry]] = []
    for path, e in _walk(reader, record.root):
        if isinstance(e, DirEntry):
            problem = _check_tree(store, e.tree, path)
            if problem:
                problems.append(problem)
        elif isinstance(e, FileEntry):
            files.append((path, e))
    with ThreadPoolExecutor(workers) as pool:
        problems.extend(p for p in pool.map(lambda pe: _check_file(store, *pe), files) if p)
    return problems


def _walk(reader: ObjectReader, root: bytes) -> Iterator[tuple[str, Entry]]:
    """(path, entry) depth first, a directory before its contents; an explicit stack, not recursion."""
    stack = [("", iter(reader.tree(root).entries))]
    while stack:
        prefix, entries = stack[-1]
        e = next(entries, None)
        if e is None:
            stack.pop()
            continue
        path = prefix + e.name
        yield path, e
        if isinstance(e, DirEntry):
            stack.append((path + "/", iter(reader.tree(e.tree).entries)))


def _fetch(store: ObjectStore, h: bytes) -> bytes | None:
    try:
        return store.get(object_key(h))
    except ObjectNotFound:
        return None


def _check_tree(store: ObjectStore, h: bytes, where: str) -> str | None:
    data = _fetch(store, h)
    if data is None:
        return f"missing tree {h.hex()} ({where})"
    if digest(data) != h:
        return f"corrupt tree {h.hex()} ({where})"
    return None


def _check_file(store: ObjectStore, path: str, e: FileEntry) -> str | None:
    whole = hashlib.sha256()
    for ref, (h, off, length, _) in zip(e.blocks, e.spans(), strict=True):
        data = _fetch(store, h)
        if data is None:
            return f"missing block {h.hex()} of {path}"
        if digest(data) != h:
            return f"corrupt block {h.hex()} of {path}"
        bare = isinstance(ref, bytes)
        if (len(data) != length) if bare else (off + length > len(data)):
            need = f"exactly {length}" if bare else f"at least {off + length}"
            return f"block {h.hex()} of {path} has {len(data)} bytes, its locator needs {need}"
        whole.update(memoryview(data)[off : off + length])
    if whole.digest() != e.sha256:
        return f"{path}: file hash does not match its blocks"
    return None
