"""Warm epochs over cached packs: each pack is read into the page cache once, its files are then served
on the event loop (no thread hop each), and every slice is still checked against its file's SHA-256."""

from __future__ import annotations

import hashlib
import os
import random
from pathlib import Path

import pytest
import trio

from fsmount.api.workspace import Workspace
from fsmount.cache import local_cache
from fsmount.fs.core import ReadOnlyFS
from fsmount.fs.options import FsOptions
from fsmount.store.local import LocalStore
from tests.pack_fixtures import MiB, PackedVersion, make_packed_version, small_files
from tests.test_pack_read_fairness import GatedStore, _read


def _fresh_epoch(pv: PackedVersion, store: GatedStore, cache: Path,
                 paths: list[str]) -> tuple[ReadOnlyFS, dict[str, bytes | Exception]]:
    """One epoch over `paths` through a new read-only FS on `cache`: (the FS, for its counters; what
    each path read)."""
    ws = Workspace(store, cache_dir=cache)
    try:
        fs = ReadOnlyFS(ws.reader, ws.reader.record(pv.id), FsOptions())
        return fs, _epoch(fs, paths)
    finally:
        ws.close()


def _epoch(fs: ReadOnlyFS, paths: list[str], readers: int = 8) -> dict[str, bytes | Exception]:
    got: dict[str, bytes | Exception] = {}
    todo = list(paths)

    async def reader() -> None:
        while todo:
            p = todo.pop()
            try:
                got[p] = await _read(fs, p)
            except Exception as e:
                got[p] = e

    async def main() -> None:
        async with trio.open_nursery() as n:
            fs.start(n)
            async with trio.open_nursery() as r:
                for _ in range(readers):
                    r.start_soon(reader)
            n.cancel_scope.cancel()

    trio.run(main)
    return got


def _evict_page_cache(cache: Path) -> int:
    """Drop the cached objects' pages from the page cache (this cache's files only)."""
    n = 0
    for p in cache.rglob("*.val"):
        fd = os.open(p, os.O_RDONLY)
        try:
            os.fsync(fd)
            os.posix_fadvise(fd, 0, 0, os.POSIX_FADV_DONTNEED)
            n += 1
        finally:
            os.close(fd)
    return n


def _setup(file_store_url: str, tmp_path: Path) -> tuple[PackedVersion, GatedStore, list[str]]:
    files = small_files(160, 4, lo=24 * 1024, hi=40 * 1024)
    pv = make_packed_version(file_store_url, files, pack_size=2 * MiB)
    assert len(pv.packs) >= 2
    # not read in place (a cached store), nothing gated
    store = GatedStore(LocalStore(Path(file_store_url.removeprefix("file://"))), set())
    _, got = _fresh_epoch(pv, store, tmp_path / "cache", list(files))  # fills the cache (whole packs)
    assert got == files
    order = list(files)
    random.Random(3).shuffle(order)
    return pv, store, order


def test_a_warm_epoch_pages_each_pack_in_and_serves_its_files_without_a_thread(
        file_store_url: str, tmp_path: Path) -> None:
    pv, store, order = _setup(file_store_url, tmp_path)
    assert _evict_page_cache(tmp_path / "cache") >= len(pv.packs)
    fs, got = _fresh_epoch(pv, store, tmp_path / "cache", order)
    assert got == pv.files
    st = fs.blocks.stats
    assert fs.reader.stats.gets == 0, fs.reader.stats
    assert 1 <= st.page_ins <= len(pv.packs), st
    # per pack: its first reader and those before its page-in began take a thread; all others none
    assert st.packed_fast >= len(order) - 8 * len(pv.packs), st


def test_a_byte_changed_in_a_paged_in_pack_is_never_served(file_store_url: str, tmp_path: Path) -> None:
    """The pack file is changed on disk (so in the page cache too) after it was cached: the file that
    byte lies in fails its SHA-256 on the event loop's fast path as on any other; it is read again,
    right, from the store; every other file is right."""
    pv, store, order = _setup(file_store_url, tmp_path)
    h = pv.packs[0]
    victim = pv.in_pack(h)[5]
    _, off, _ = pv.locator[victim]
    packs = [p for p in (tmp_path / "cache").rglob("*.val") if hashlib.sha256(p.read_bytes()).digest() == h]
    assert len(packs) == 1
    with open(packs[0], "r+b") as f:
        f.seek(off + 7)
        b = f.read(1)
        f.seek(off + 7)
        f.write(bytes([b[0] ^ 0x40]))
    fs, got = _fresh_epoch(pv, store, tmp_path / "cache", order)
    assert got == pv.files  # never the changed byte
    assert fs.reader.stats.cache_integrity_errors >= 1, fs.reader.stats


def test_a_due_cache_lookup_is_not_a_page_miss(file_store_url: str, tmp_path: Path,
                                               monkeypatch: pytest.MonkeyPatch) -> None:
    """A kept pack file is looked up in the cache again every _FD_RECHECK s (an RWF_NOWAIT read then
    says WouldBlock too): that must not read the pack through again. With a recheck due on every
    read and the pages resident, an epoch pages nothing in (it paged each pack in every 5 s)."""
    pv, store, order = _setup(file_store_url, tmp_path)
    monkeypatch.setattr(local_cache, "_FD_RECHECK", 0.0)
    fs, got = _fresh_epoch(pv, store, tmp_path / "cache", order)
    assert got == pv.files
    assert fs.blocks.stats.page_ins == 0, fs.blocks.stats
