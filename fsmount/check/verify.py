"""Verify one version: every tree and block it needs is in the store and hashes right; repair it."""

from __future__ import annotations

import hashlib
import logging
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

from fsmount.cache.fetcher import ObjectReader
from fsmount.errors import FsmountError, ObjectNotFound
from fsmount.format.hashing import digest, object_key
from fsmount.format.objects import DirEntry, FileEntry
from fsmount.format.records import VersionRecord
from fsmount.format.tree_edit import walk_tree
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Problem:
    """One thing wrong: `kind` is 'tree', 'block' or 'file'; `obj` the object's hash (None for 'file')."""

    kind: str
    obj: bytes | None
    path: str
    message: str

    def __str__(self) -> str:
        return self.message


@dataclass
class RepairReport:
    """What verify found, what `repair_version` wrote again and what it could not."""

    problems: list[Problem] = field(default_factory=list)
    repaired: list[str] = field(default_factory=list)
    unrepaired: list[str] = field(default_factory=list)
    fixed: set[bytes] = field(default_factory=set)  # objects written again
    remaining: list[Problem] = field(default_factory=list)  # what a verify after the repair found


def verify_version(
    store: ObjectStore, reader: ObjectReader, record: VersionRecord, workers: int = 16
) -> list[str]:
    """Re-hash the stored bytes of every tree and block of `record`; list what is missing or corrupt."""
    return [str(p) for p in find_problems(store, reader, record, workers)]


def find_problems(
    store: ObjectStore, reader: ObjectReader, record: VersionRecord, workers: int = 16
) -> list[Problem]:
    """What `verify_version` lists, with the object and dataset path of each problem.

    The structure is read through `reader` (so through the cache); every object's bytes are
    fetched from the store itself, never from the cache.
    """
    problems = [p for p in (_check_tree(store, record.root, "root"),) if p]
    files: list[tuple[str, FileEntry]] = []
    for path, e in walk_tree(reader.tree, record.root):
        if isinstance(e, DirEntry):
            problem = _check_tree(store, e.tree, path)
            if problem:
                problems.append(problem)
        elif isinstance(e, FileEntry):
            files.append((path, e))
    with ThreadPoolExecutor(workers) as pool:
        problems.extend(p for p in pool.map(lambda pe: _check_file(store, *pe), files) if p)
    return problems


def repair_version(
    store: ObjectStore, reader: ObjectReader, record: VersionRecord, folder: Path, workers: int = 16
) -> RepairReport:
    """Verify, then write again every missing or corrupt object that a good local copy provides.

    A block comes from the file at the same dataset path under `folder`, used only if its whole
    content hashes to the entry's SHA-256; a tree from the local cache (which holds only verified
    bytes). Each object written is checked against its hash first, then replaces the stored one.
    A second verify tells what is still wrong (`unrepaired`, each with why where known).
    """
    report = RepairReport(problems=find_problems(store, reader, record, workers))
    if not report.problems:
        return report
    why: dict[str, str] = {}
    entries = {p: e for p, e in walk_tree(reader.tree, record.root) if isinstance(e, FileEntry)}
    for path in dict.fromkeys(p.path for p in report.problems if p.kind != "tree"):
        why[path] = _repair_file(store, path, entries[path], folder / path, report)
    for p in report.problems:
        if p.kind == "tree":
            why[p.path] = _repair_tree(store, reader, p, report)
    report.remaining = find_problems(store, reader, record, workers)
    for p in report.remaining:
        reason = why.get(p.path) or "no local copy of it"
        report.unrepaired.append(f"{p.message}: {reason}")
    return report


def _repair_tree(store: ObjectStore, reader: ObjectReader, p: Problem, report: RepairReport) -> str:
    assert p.obj is not None
    data = reader.cache.get(p.obj)
    if data is None or digest(data) != p.obj:
        return "not in the local cache"
    _write(store, p.obj, data)
    report.fixed.add(p.obj)
    report.repaired.append(f"tree {p.obj.hex()} ({p.path})")
    return ""


def _repair_file(store: ObjectStore, path: str, e: FileEntry, local: Path, report: RepairReport) -> str:
    """Re-upload the damaged bare blocks of `e` from `local`, once its bytes are known to be the entry's;
    returns why nothing could be done, or ''."""
    try:
        if os.stat(local).st_size != e.size or _file_sha256(local) != e.sha256:
            return f"{local} does not have the version's content"
    except OSError as err:
        return f"cannot read {local}: {err.strerror}"
    with open(local, "rb") as f:
        for ref, (h, _, length, pos) in zip(e.blocks, e.spans(), strict=True):
            if not isinstance(ref, bytes):
                continue  # a range of a bigger object: this file alone cannot rebuild it
            stored = _fetch(store, h)
            if stored is not None and len(stored) == length and digest(stored) == h:
                continue
            f.seek(pos)
            data = f.read(length)
            if digest(data) == h:
                _write(store, h, data)
                report.fixed.add(h)
                report.repaired.append(f"block {h.hex()} of {path}")
    return "its object holds other files' bytes too; repair it from those" if any(
        not isinstance(r, bytes) for r in e.blocks) else ""


def _write(store: ObjectStore, h: bytes, data: bytes) -> None:
    """Store the verified `data` of object `h`, replacing whatever is there."""
    key = object_key(h)
    try:
        store.replace(key, data)
    except FsmountError as e:
        raise FsmountError(f"cannot repair {key}: {e}") from None
    log.info("repaired object %s in %s", key, store.url)


def _file_sha256(path: Path) -> bytes:
    h = hashlib.sha256()
    with open(path, "rb", buffering=0) as f:
        while data := f.read(8 * 2**20):
            h.update(data)
    return h.digest()


def _fetch(store: ObjectStore, h: bytes) -> bytes | None:
    try:
        return store.get(object_key(h))
    except ObjectNotFound:
        return None


def _check_tree(store: ObjectStore, h: bytes, where: str) -> Problem | None:
    data = _fetch(store, h)
    if data is None:
        return Problem("tree", h, where, f"missing tree {h.hex()} ({where})")
    if digest(data) != h:
        return Problem("tree", h, where, f"corrupt tree {h.hex()} ({where})")
    return None


def _check_file(store: ObjectStore, path: str, e: FileEntry) -> Problem | None:
    whole = hashlib.sha256()
    for ref, (h, off, length, _) in zip(e.blocks, e.spans(), strict=True):
        data = _fetch(store, h)
        if data is None:
            return Problem("block", h, path, f"missing block {h.hex()} of {path}")
        if digest(data) != h:
            return Problem("block", h, path, f"corrupt block {h.hex()} of {path}")
        bare = isinstance(ref, bytes)
        if (len(data) != length) if bare else (off + length > len(data)):
            need = f"exactly {length}" if bare else f"at least {off + length}"
            return Problem("block", h, path, f"block {h.hex()} of {path} has {len(data)} bytes,"
                           f" its locator needs {need}")
        whole.update(memoryview(data)[off : off + length])
    if whole.digest() != e.sha256:
        return Problem("file", None, path, f"{path}: file hash does not match its blocks")
    return None
