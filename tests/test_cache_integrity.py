"""A damaged local cache is never trusted: a flipped byte in a cached block file or in a small
object inside a SQLite shard is found by its CRC32C, dropped, fetched again, counted and logged."""

from __future__ import annotations

import contextlib
import json
import logging
import sqlite3
from pathlib import Path
from typing import Any

import diskcache
import pytest
import trio

from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.cache.fetcher import ObjectReader
from fsmount.cache.local_cache import ContentCache, CorruptEntry
from fsmount.format.hashing import digest, object_key
from fsmount.fs.core import ReadOnlyFS
from fsmount.fs.inodes import ROOT_INO
from fsmount.fs.options import FsOptions
from fsmount.store import open_store
from tests.fs_helpers import _blob, cli_mount
from tests.helpers import run_cli, write_tree

LARGE = 64 * 1024  # >= 32 KiB: diskcache keeps it as a file in the cache folder
SMALL = 1000  # inside a SQLite shard


def cache_row(cache_dir: Path, h: bytes) -> tuple[Path, str | None]:
    """(shard database, file name relative to the shard or None if inline) of object `h`."""
    for db in sorted(cache_dir.glob("[0-9][0-9][0-9]/cache.db")):
        with contextlib.closing(sqlite3.connect(db)) as con:
            row = con.execute("SELECT filename FROM Cache WHERE key = ? AND raw = 1", (h,)).fetchone()
        if row:
            return db, row[0]
    raise AssertionError(f"object {h.hex()} is not in the cache in {cache_dir}")


def flip_cached_byte(cache_dir: Path, h: bytes, at: int = 12345) -> None:
    """Flip one bit of object `h` where the cache keeps it: its block file, or its SQLite value."""
    db, filename = cache_row(cache_dir, h)
    if filename is not None:
        path = db.parent / filename
        with open(path, "r+b") as f:
            f.seek(at)
            b = f.read(1)
            f.seek(at)
            f.write(bytes([b[0] ^ 0x01]))
        return
    with contextlib.closing(sqlite3.connect(db)) as con, con:
        (value,) = con.execute("SELECT value FROM Cache WHERE key = ? AND raw = 1", (h,)).fetchone()
        value = bytearray(value)
        value[at % len(value)] ^= 0x01
        con.execute("UPDATE Cache SET value = ? WHERE key = ? AND raw = 1", (bytes(value), h))


@pytest.mark.parametrize("size", [LARGE, SMALL], ids=["block-file", "sqlite-value"])
def test_damaged_cached_object_is_dropped_refetched_counted_and_logged(
        file_store_url: str, tmp_path: Path, size: int, caplog: pytest.LogCaptureFixture) -> None:
    store = open_store(file_store_url)
    data = _blob(f"obj{size}", size)
    h = digest(data)
    store.put(object_key(h), data)
    cache = ContentCache(tmp_path / "cache")
    reader = ObjectReader(store, cache)
    assert reader.read(h) == data and h in cache
    flip_cached_byte(cache.directory, h)
    with caplog.at_level(logging.WARNING, logger="fsmount.cache.fetcher"):
        assert reader.read(h) == data  # re-fetched, not the damaged bytes
    assert reader.stats.cache_integrity_errors == 1 and reader.stats.objects_fetched == 2
    assert [r for r in caplog.records if r.levelno == logging.WARNING and h.hex() in r.getMessage()]
    assert cache.get(h) == data  # the fresh copy went back in, with its checksum
    assert reader.read(h) == data and reader.stats.objects_fetched == 2
    cache.close()


def test_damaged_entry_is_dropped_by_the_cache(tmp_path: Path) -> None:
    cache = ContentCache(tmp_path / "cache")
    data = _blob("x", LARGE)
    cache.put(digest(data), data)
    flip_cached_byte(cache.directory, digest(data), at=0)
    with pytest.raises(CorruptEntry):
        cache.get(digest(data))
    assert digest(data) not in cache
    cache.close()


def test_entries_without_a_checksum_are_checked_by_their_hash(tmp_path: Path) -> None:
    """Entries written before checksums existed (no tag) are served only if they match their hash."""
    good, bad = _blob("good", LARGE), _blob("bad", SMALL)
    cache = ContentCache(tmp_path / "cache")
    cache.close()
    raw = diskcache.FanoutCache(str(tmp_path / "cache"), shards=8)  # an older fsmount: no tag
    raw.set(digest(good), good)
    raw.set(digest(bad), bad)
    raw.close()
    flip_cached_byte(tmp_path / "cache", digest(bad))
    cache = ContentCache(tmp_path / "cache")
    assert cache.get(digest(good)) == good
    with pytest.raises(CorruptEntry):
        cache.get(digest(bad))
    assert digest(bad) not in cache
    cache.close()


def _version(url: str, work: Path) -> tuple[str, dict[str, bytes], dict[str, Any]]:
    files = {"big.bin": _blob("big", 4 * LARGE + 7), "small.txt": _blob("small", SMALL)}
    ds = Dataset.create(dataset_name="cached", dataset_project="integrity", store=url, block_size=LARGE)
    ds.add_files(write_tree(work, files))
    ds.finalize()
    entries = dict(Dataset.get(dataset_id=ds.id, store=url).iter_entries())
    return ds.id, files, entries


def test_mount_never_serves_a_damaged_cache(file_store_url: str, tmp_path: Path, require_fuse: None) -> None:
    vid, files, entries = _version(file_store_url, tmp_path / "src")
    cache = tmp_path / "cache"
    with cli_mount(vid, tmp_path / "mnt", file_store_url, cache) as mnt:
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data
    # Unmounted: the cache holds every block. Damage one block file and the small file's value.
    flip_cached_byte(cache, entries["big.bin"].blocks[2])
    flip_cached_byte(cache, entries["small.txt"].blocks[0])
    with cli_mount(vid, tmp_path / "mnt", file_store_url, cache) as mnt:
        for name, data in files.items():
            assert (mnt / name).read_bytes() == data
        counters = json.loads(run_cli("status", str(mnt), "--json").stdout)["counters"]
        assert counters["store"]["cache_integrity_errors"] == 2
        assert counters["store"]["objects_fetched"] == 2  # the two dropped entries, nothing else


def test_get_copy_never_copies_a_damaged_cache(file_store_url: str, tmp_path: Path) -> None:
    vid, files, entries = _version(file_store_url, tmp_path / "src")
    cache = tmp_path / "cache"
    common = ("--store", file_store_url, "--cache-dir", str(cache))
    run_cli("get", vid, "--copy", str(tmp_path / "one"), *common)
    flip_cached_byte(cache, entries["big.bin"].blocks[0])
    flip_cached_byte(cache, entries["small.txt"].blocks[0])
    proc = run_cli("get", vid, "--copy", str(tmp_path / "two"), *common)
    for name, data in files.items():
        assert (tmp_path / "two" / name).read_bytes() == data
    assert proc.stderr.count("damaged") == 2  # each dropped entry logged at warning


def test_a_block_held_by_an_open_file_is_the_checked_bytes(file_store_url: str, tmp_path: Path) -> None:
    """The rule for open files: a cached block is read whole and checked on first use, then served
    from memory; a cache file changed under an open file changes nothing it serves, and the next
    open file to load the block finds the damage and fetches the block again."""
    vid, files, entries = _version(file_store_url, tmp_path / "src")
    data, h = files["big.bin"], entries["big.bin"].blocks[1]
    ws = Workspace(file_store_url, cache_dir=tmp_path / "cache")
    ws.reader.read(h)  # in the cache
    fs = ReadOnlyFS(ws.reader, ws.reader.record(vid), FsOptions())

    async def go() -> None:
        async with trio.open_nursery() as n:
            fs.start(n)
            ino = (await fs.lookup(ROOT_INO, "big.bin")).ino
            fh = await fs.open(ino, 0)
            assert bytes(await fs.read(fh, LARGE, 100)) == data[LARGE:LARGE + 100]
            assert fs.blocks.stats.block_hits == 1 and ws.reader.stats.cache_integrity_errors == 0
            flip_cached_byte(ws.cache.directory, h, at=5000)
            assert bytes(await fs.read(fh, LARGE + 4900, 200)) == data[LARGE + 4900:LARGE + 5100]
            fh2 = await fs.open(ino, 0)
            assert bytes(await fs.read(fh2, LARGE + 4900, 200)) == data[LARGE + 4900:LARGE + 5100]
            assert ws.reader.stats.cache_integrity_errors == 1
            fs.release(fh)
            fs.release(fh2)
            n.cancel_scope.cancel()

    trio.run(go)
