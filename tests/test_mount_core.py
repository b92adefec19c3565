"""The filesystem core without FUSE: inodes, attributes, readdir, xattrs, the read path and prefetch."""

from __future__ import annotations

import errno
import hashlib
import logging
import os
import stat
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio

from fsmount.api.workspace import Workspace
from fsmount.errors import FsmountError
from fsmount.format.hashing import object_key
from fsmount.format.objects import DirEntry
from fsmount.fs.adapter import Operations
from fsmount.fs.core import ReadOnlyFS
from fsmount.fs.inodes import ROOT_INO
from fsmount.fs.options import FsOptions
from fsmount.store import open_store
from tests.fs_helpers import BLOCK, expected_hashes, make_lineage


@pytest.fixture
def lineage(file_store_url: str, tmp_path: Path) -> tuple[list[str], dict[str, bytes | str], str]:
    ids, merged = make_lineage(file_store_url, tmp_path / "src")
    return ids, merged, file_store_url


def _fs(store_url: str, version: str, cache: Path, **opts: Any) -> ReadOnlyFS:
    ws = Workspace(store_url, cache_dir=cache)
    return ReadOnlyFS(ws.reader, ws.reader.record(version), FsOptions(**opts))


def run(fs: ReadOnlyFS, fn: Callable[[ReadOnlyFS], Any]) -> Any:
    """Run `fn(fs)` in trio with prefetch enabled, as the daemon does."""
    async def main() -> Any:
        async with trio.open_nursery() as n:
            fs.start(n)
            out = await fn(fs)
            n.cancel_scope.cancel()
        return out

    return trio.run(main)


async def resolve(fs: ReadOnlyFS, path: str) -> int:
    ino = ROOT_INO
    for part in [p for p in path.split("/") if p]:
        ino = (await fs.lookup(ino, part)).ino
    return ino


async def listdir(fs: ReadOnlyFS, ino: int) -> list[tuple[str, Any, int]]:
    return [x async for x in fs.readdir(ino, 0)]


async def walk(fs: ReadOnlyFS, ino: int = ROOT_INO, prefix: str = "") -> dict[str, str]:
    """path -> sha256 / '->target' / '/' for empty dirs, read through the core."""
    out: dict[str, str] = {}
    entries = await listdir(fs, ino)
    if not entries and prefix:
        out[prefix.rstrip("/") + "/"] = "/"
    for name, attr, _ in entries:
        path = prefix + name
        child = (await fs.lookup(ino, name)).ino
        assert child == attr.ino
        if attr.is_dir:
            out.update(await walk(fs, child, path + "/"))
        elif stat.S_ISLNK(attr.mode):
            out[path] = "->" + await fs.readlink(child)
        else:
            fh = await fs.open(child, 0)
            data = await fs.blocks.read(fs._files[fh], 0, attr.size + 10)
            fs.release(fh)
            assert len(data) == attr.size
            out[path] = hashlib.sha256(data).hexdigest()
    return out


def test_whole_merged_tree(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")
    assert run(fs, walk) == expected_hashes(merged)


def test_mount_reads_only_the_root(lineage: Any, tmp_path: Path) -> None:
    ids, _, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")

    async def go(fs: ReadOnlyFS) -> None:
        await fs.getattr(ROOT_INO)
        await listdir(fs, ROOT_INO)

    run(fs, go)
    # The root's tree only: listing a directory needs no child's tree (no link counts to compute).
    assert fs.reader.stats.objects_fetched == 1
    assert fs.inodes.counts()["directories"] <= 1 + 8


def test_attrs_links_inodes_offsets(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")

    async def go(fs: ReadOnlyFS) -> None:
        root = await fs.getattr(ROOT_INO)
        top_dirs = {p.split("/")[0] for p in merged if "/" in p}
        assert top_dirs and root.nlink == 1  # directories are "not counted" (DIR_NLINK), as on btrfs
        assert stat.S_ISDIR(root.mode)
        train = await fs.lookup(ROOT_INO, "train")
        assert train.nlink == 1  # no subdirectory's tree is needed for it
        big = await fs.lookup(ROOT_INO, "big.bin")
        assert big.size == len(merged["big.bin"]) and stat.S_IMODE(big.mode) == 0o644
        link = await fs.lookup(ROOT_INO, "link")
        assert stat.S_ISLNK(link.mode) and await fs.readlink(link.ino) == "labels.csv"
        with pytest.raises(FsmountError) as e:
            await fs.lookup(ROOT_INO, "nope")
        assert e.value.errno == errno.ENOENT
        with pytest.raises(FsmountError) as e:
            await fs.readlink(big.ino)
        assert e.value.errno == errno.EINVAL
        # Stable inode numbers: after the kernel forgets, the same name gets the same number.
        fs.forget(big.ino, 1)
        assert big.ino not in fs.inodes.live
        assert (await fs.lookup(ROOT_INO, "big.bin")).ino == big.ino
        assert (await fs.getattr(big.ino)).size == big.size
        # readdir offsets resume exactly where they left off, however listings interleave.
        full = await listdir(fs, ROOT_INO)
        names = [n for n, _, _ in full]
        assert names == sorted(names, key=lambda n: n.encode())
        for _, _, nxt in full:
            rest = [n async for n, _, _ in fs.readdir(ROOT_INO, nxt)]
            assert rest == names[nxt:]
        assert len({a.ino for _, a, _ in full}) == len(full)

    run(fs, go)


def test_xattrs_and_statfs(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")

    async def go(fs: ReadOnlyFS) -> None:
        assert await fs.getxattr(ROOT_INO, "user.fsmount.version") == ids[-1].encode()
        ino = await resolve(fs, "test/001.jpg")
        assert await fs.getxattr(ino, "user.fsmount.version") == ids[3].encode()
        sha = hashlib.sha256(merged["test/001.jpg"]).hexdigest()  # type: ignore[arg-type]
        assert await fs.getxattr(ino, "user.fsmount.sha256") == sha.encode()
        old = await resolve(fs, "train/cat/002.jpg")
        assert await fs.getxattr(old, "user.fsmount.version") == ids[0].encode()
        labels = await resolve(fs, "labels.csv")
        assert await fs.getxattr(labels, "user.fsmount.version") == ids[1].encode()
        assert set(await fs.listxattr(ino)) == {"user.fsmount.sha256", "user.fsmount.version"}
        with pytest.raises(FsmountError) as e:
            await fs.getxattr(ino, "user.other")
        assert e.value.errno == errno.ENODATA
        st = fs.statfs()
        assert st.files == fs.record.files and st.block_size == BLOCK

    run(fs, go)


def test_writes_are_erofs(lineage: Any, tmp_path: Path) -> None:
    import os

    ids, _, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")

    async def go(fs: ReadOnlyFS) -> None:
        ino = await resolve(fs, "labels.csv")
        for flags in (os.O_WRONLY, os.O_RDWR, os.O_RDONLY | os.O_TRUNC, os.O_WRONLY | os.O_APPEND):
            with pytest.raises(FsmountError) as e:
                await fs.open(ino, flags)
            assert e.value.errno == errno.EROFS

    run(fs, go)


def test_reads_across_blocks_and_first_read_fetches_one_block(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    data = merged["big.bin"]
    assert isinstance(data, bytes)
    fs = _fs(url, ids[-1], tmp_path / "cache")

    async def go(fs: ReadOnlyFS) -> None:
        ino = await resolve(fs, "big.bin")
        before = fs.reader.stats.objects_fetched
        fh = await fs.open(ino, 0)
        f = fs._files[fh]
        assert await fs.read(fh, 0, 1024) == data[:1024]
        assert fs.reader.stats.objects_fetched == before + 1  # the first KiB: one block, no prefetch
        for off, size in [(BLOCK - 1, 2), (BLOCK, BLOCK), (3 * BLOCK - 10, 3 * BLOCK + 20),
                          (len(data) - 5, 100), (len(data), 10), (len(data) + 100, 10), (7, 0)]:
            assert await fs.read(fh, off, size) == data[off:off + size], (off, size)
        assert f.window == 0  # random access resets the window
        fs.release(fh)

    run(fs, go)


def test_sequential_prefetch_grows_and_respects_budget(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    data = merged["big.bin"]
    fs = _fs(url, ids[-1], tmp_path / "cache", prefetch_initial=BLOCK, prefetch_max=8 * BLOCK)

    async def go(fs: ReadOnlyFS) -> None:
        ino = await resolve(fs, "big.bin")
        fh = await fs.open(ino, 0)
        f = fs._files[fh]
        windows = []
        out = bytearray()
        st = fs.blocks.stats
        fetched_before = fs.reader.stats.objects_fetched
        for off in range(0, len(data), 1024):  # type: ignore[arg-type]
            out += await fs.read(fh, off, 1024)
            windows.append(f.window)
            # A consumer slower than the store: the prefetches issued so far land before the next
            # read. Waiting on the counter (not on time) keeps this independent of machine load.
            with trio.fail_after(30):
                while st.prefetch_inflight_bytes:
                    await trio.sleep(0.001)
        assert bytes(out) == data
        assert windows[0] == 0 and windows[1] == BLOCK and windows[2] == 2 * BLOCK
        assert max(windows) == 8 * BLOCK
        assert st.prefetch_started > 0 and st.prefetch_fetched > 0
        # Only the blocks read before the window opened were demand fetches; the rest came from
        # prefetch, and no block went to the store twice.
        assert st.block_misses <= 2, st
        assert st.block_hits == 0, st  # served from the memory prefetch put them in, not re-read
        assert fs.reader.stats.objects_fetched - fetched_before == len(f.spans)
        fs.release(fh)

    run(fs, go)
    # A zero budget disables prefetch (every attempt is counted as skipped).
    fs2 = _fs(url, ids[-1], tmp_path / "cache2", prefetch_initial=BLOCK, prefetch_budget=0)

    async def go2(fs: ReadOnlyFS) -> None:
        ino = await resolve(fs, "big.bin")
        fh = await fs.open(ino, 0)
        for off in range(0, 8 * BLOCK, 1024):
            await fs.read(fh, off, 1024)
        assert fs.blocks.stats.prefetch_started == 0 and fs.blocks.stats.prefetch_skipped > 0

    run(fs2, go2)


def test_concurrent_readers_do_not_serialise(lineage: Any, tmp_path: Path) -> None:
    """Two readers of different files: a slow fetch for one does not hold up the other."""
    ids, _, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")
    store = fs.reader.store
    real_get = store.get
    slow = threading.Event()

    async def go(fs: ReadOnlyFS) -> None:
        a = await fs.open(await resolve(fs, "big.bin"), 0)
        b = await fs.open(await resolve(fs, "val/001.jpg"), 0)
        big_first = fs._files[a].spans[0][0]

        entered = threading.Event()

        def get(key: str) -> bytes:
            if key == object_key(big_first):
                entered.set()
                slow.wait(10)
            return real_get(key)

        store.get = get  # type: ignore[method-assign]
        done: list[str] = []

        async def reader(fh: int, name: str) -> None:
            await fs.read(fh, 0, 100)
            done.append(name)

        async with trio.open_nursery() as n:
            n.start_soon(reader, a, "big")
            with trio.fail_after(5):  # the big file's reader is stuck in its store GET
                while not entered.is_set():
                    await trio.sleep(0.005)
            n.start_soon(reader, b, "val")
            with trio.fail_after(5):
                while "val" not in done:
                    await trio.sleep(0.01)
            assert done == ["val"]
            slow.set()
        assert sorted(done) == ["big", "val"]

    run(fs, go)


def test_unreachable_store_gives_eio_in_bounded_time(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache", fetch_timeout=0.5)
    store = fs.reader.store
    real_get = store.get
    hang = threading.Event()

    async def go(fs: ReadOnlyFS) -> None:
        ino = await resolve(fs, "big.bin")
        fh = await fs.open(ino, 0)
        assert await fs.read(fh, 0, 10) == merged["big.bin"][:10]  # type: ignore[index]
        store.get = lambda key: hang.wait(30) and real_get(key)  # type: ignore[method-assign,assignment]
        t0 = time.monotonic()
        with pytest.raises(FsmountError) as e:
            await fs.read(fh, 20 * BLOCK, 10)
        assert e.value.errno == errno.EIO and time.monotonic() - t0 < 3
        assert await fs.read(fh, 0, 10) == merged["big.bin"][:10]  # type: ignore[index]
        # An unread directory fails the same way, and works once the store is back.
        with pytest.raises(FsmountError):
            await resolve(fs, "deep/a")
        hang.set()
        store.get = real_get  # type: ignore[method-assign]
        # A timed-out object fails at once while its abandoned fetch still runs (so that the kernel's
        # retry of a failed read does not wait a second timeout); wait for those fetches to end.
        while any(fs.reader.fetching(h) for h in list(fs.blocks._timed_out)):
            await trio.sleep(0.01)
        assert await fs.read(fh, 20 * BLOCK, 10) == merged["big.bin"][20 * BLOCK:20 * BLOCK + 10]  # type: ignore[index]
        await resolve(fs, "deep/a/b/c/d.txt")
        assert fs.blocks.stats.timeouts >= 2

    run(fs, go)


def test_corrupt_block_is_eio_never_wrong_bytes(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")

    async def go(fs: ReadOnlyFS) -> None:
        ino = await resolve(fs, "val/001.jpg")
        fh = await fs.open(ino, 0)
        h = fs._files[fh].spans[1][0]
        path = Path(open_store(url).root) / object_key(h)  # type: ignore[attr-defined]
        path.write_bytes(b"x" * path.stat().st_size)
        assert await fs.read(fh, 0, 100) == merged["val/001.jpg"][:100]  # type: ignore[index]
        with pytest.raises(FsmountError) as e:
            await fs.read(fh, BLOCK, 100)
        assert e.value.errno == errno.EIO
        assert fs.reader.stats.integrity_errors == 1

    run(fs, go)


def test_just_fetched_block_is_served_from_memory_and_cached_behind(lineage: Any, tmp_path: Path) -> None:
    """A fetched block serves later reads of it from memory (no second lookup or GET); the disk
    cache gets it behind the reader, and readers asking while that write is pending share the bytes."""
    ids, merged, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")
    cache = fs.reader.cache
    real_put = cache.put
    gate = threading.Event()

    def slow_put(h: bytes, data: bytes) -> None:
        gate.wait(10)
        real_put(h, data)

    cache.put = slow_put  # type: ignore[method-assign]
    data = merged["big.bin"]

    async def go(fs: ReadOnlyFS) -> None:
        ino = await resolve(fs, "big.bin")
        fh = await fs.open(ino, 0)
        f = fs._files[fh]
        h = f.spans[2][0]
        assert bytes(await fs.read(fh, 2 * BLOCK + 5, 100)) == data[2 * BLOCK + 5:2 * BLOCK + 105]  # type: ignore[index]
        assert fs.blocks.stats.block_misses == 1 and isinstance(f.handles[2], bytes)
        assert h not in cache  # the disk write waits behind the reader
        # Same block again (another offset): from memory, no store GET, no cache lookup.
        fetched = fs.reader.stats.objects_fetched
        assert bytes(await fs.read(fh, 2 * BLOCK + 1000, 10)) == data[2 * BLOCK + 1000:2 * BLOCK + 1010]  # type: ignore[index]
        # Another open file asking while the write is pending shares the verified bytes.
        fh2 = await fs.open(ino, 0)
        assert bytes(await fs.read(fh2, 2 * BLOCK, 10)) == data[2 * BLOCK:2 * BLOCK + 10]  # type: ignore[index]
        assert fs.reader.stats.objects_fetched == fetched
        assert fs.blocks.stats.memory_hits == 1
        gate.set()
        await trio.to_thread.run_sync(cache.flush)
        assert h in cache
        fs.release(fh)
        fs.release(fh2)
        assert fs.blocks.stats.held_bytes == 0

    run(fs, go)


def test_prefetch_holds_blocks_within_budget_and_frees_passed_ones(lineage: Any, tmp_path: Path) -> None:
    ids, merged, url = lineage
    data = merged["big.bin"]
    budget = 6 * BLOCK
    fs = _fs(url, ids[-1], tmp_path / "cache", prefetch_initial=BLOCK, prefetch_max=16 * BLOCK,
             prefetch_budget=budget)

    async def go(fs: ReadOnlyFS) -> None:
        fh = await fs.open(await resolve(fs, "big.bin"), 0)
        f = fs._files[fh]
        out = bytearray()
        peak = 0
        for off in range(0, len(data), BLOCK // 2):  # type: ignore[arg-type]
            out += await fs.read(fh, off, BLOCK // 2)
            peak = max(peak, fs.blocks.stats.held_bytes + fs.blocks.stats.prefetch_inflight_bytes)
            # a sequential reader keeps nothing from spans it has passed
            assert all(i >= f.span_index(off) for i in f.handles)
            await trio.sleep(0.001)
        assert bytes(out) == data
        assert peak <= budget + BLOCK  # the budget, plus the demand read's own block
        assert fs.blocks.stats.prefetch_fetched > 0
        fs.release(fh)
        assert fs.blocks.stats.held_bytes == 0

    run(fs, go)


def test_failed_reads_and_metadata_are_counted_apart_and_ordinary_replies_are_debug(
        lineage: Any, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    ids, _, url = lineage
    fs = _fs(url, ids[-1], tmp_path / "cache")
    ops = Operations(fs)
    caplog.set_level(logging.DEBUG, logger="fsmount")

    async def fails(call: Any) -> int:
        with pytest.raises(pyfuse3.FUSEError) as e:
            await call
        return e.value.errno

    async def go(fs: ReadOnlyFS) -> None:
        labels = await resolve(fs, "labels.csv")
        deep = await resolve(fs, "deep")
        # Ordinary replies: the caller's business, not failures.
        assert await fails(ops.getattr(10**9)) == errno.ENOENT
        assert await fails(ops.open(labels, os.O_WRONLY, None)) == errno.EROFS
        assert await fails(ops.getxattr(labels, b"user.other", None)) == errno.ENODATA
        assert await fails(ops.readlink(labels, None)) == errno.EINVAL
        assert await fails(ops.opendir(labels, None)) == errno.ENOTDIR
        assert (await ops.lookup(ROOT_INO, b"missing")).st_ino == 0  # a cached negative entry
        assert fs.counters()["errors"] == 0
        assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
        assert any(r.levelno == logging.DEBUG and "getattr" in r.getMessage() for r in caplog.records)
        # A failed read: a corrupt block.
        ino = await resolve(fs, "val/001.jpg")
        fh = (await ops.open(ino, 0, None)).fh
        path = Path(open_store(url).root) / object_key(fs._files[fh].spans[1][0])  # type: ignore[attr-defined]
        path.write_bytes(b"x" * path.stat().st_size)
        assert await fails(ops.read(fh, BLOCK, 100)) == errno.EIO
        # A failed metadata operation: the tree of a directory not loaded yet is corrupt.
        sub = fs.reader.tree(fs.reader.tree(fs.inodes.dirs[deep].tree).entries[0].tree)  # deep/a
        assert isinstance(sub.entries[0], DirEntry)
        path = Path(open_store(url).root) / object_key(sub.entries[0].tree)  # type: ignore[attr-defined]
        path.write_bytes(b"y" * path.stat().st_size)
        a = await resolve(fs, "deep/a")
        b = await ops.lookup(a, sub.entries[0].name.encode())  # its attributes need only deep/a's tree
        assert b.st_ino and stat.S_ISDIR(b.st_mode)
        assert await fails(ops.lookup(b.st_ino, b"c")) == errno.EIO  # an error reply, never a negative entry
        # A bug (here: an inode that is not a number) is EIO too, with its traceback in the log.
        assert await fails(ops.getattr("nonsense")) == errno.EIO  # type: ignore[arg-type]

    run(fs, go)
    c = fs.counters()
    assert (c["read_errors"], c["metadata_errors"], c["write_errors"], c["errors"]) == (1, 2, 0, 3)
    assert "getattr" in str(c["last_error"])
    logged = [r for r in caplog.records if r.name == "fsmount.fs.adapter" and r.levelno >= logging.ERROR]
    assert [r.exc_info is not None for r in logged] == [False, False, True]  # tracebacks for bugs only
