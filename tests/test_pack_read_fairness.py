"""Pack fetches under a slow store: no reader queues behind one pack; packs stay in the memory budget."""

from __future__ import annotations

import os
import random
import threading
from collections.abc import Iterator
from pathlib import Path

import trio

from fsmount.api.workspace import Workspace
from fsmount.format.hashing import object_key
from fsmount.fs.core import ReadOnlyFS
from fsmount.fs.inodes import ROOT_INO
from fsmount.fs.options import FsOptions
from fsmount.store.base import ObjectInfo, ObjectStore
from fsmount.store.local import LocalStore
from tests.fs_helpers import wait_until
from tests.pack_fixtures import PackedVersion, make_packed_version, small_files


class GatedStore(ObjectStore):
    """A real file:// store whose whole-object GETs of `gated` keys wait for `release` (ranged GETs pass)."""

    def __init__(self, inner: LocalStore, gated: set[str]) -> None:
        self.inner = inner
        self.url = inner.url
        self.gated = gated
        self.release = threading.Event()
        self.lock = threading.Lock()
        self.inflight = 0
        self.max_inflight = 0
        self.entered = threading.Event()

    def get(self, key: str) -> bytes:
        if key in self.gated:
            with self.lock:
                self.inflight += 1
                self.max_inflight = max(self.max_inflight, self.inflight)
            self.entered.set()
            try:
                assert self.release.wait(60), "the test never released the store"
            finally:
                with self.lock:
                    self.inflight -= 1
        return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        return self.inner.get_range(key, offset, length)

    def head(self, key: str) -> ObjectInfo | None:
        return self.inner.head(key)

    def put(self, key: str, data: bytes) -> bool:
        return self.inner.put(key, data)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_versioned(key)

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        return self.inner.put_conditional(key, data, if_match)

    def delete(self, key: str) -> None:
        self.inner.delete(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        return self.inner.list(prefix)


def _setup(file_store_url: str, tmp_path: Path, npacks: int, gate: str,
           **opts: float | int) -> tuple[PackedVersion, GatedStore, ReadOnlyFS]:
    files = small_files(20 * npacks, 2, lo=4096, hi=4096)
    pv = make_packed_version(file_store_url, files, pack_size=20 * 4096)
    assert len(pv.packs) == npacks
    gated = {object_key(pv.packs[0])} if gate == "first" else {object_key(h) for h in pv.packs}
    store = GatedStore(LocalStore(Path(file_store_url.removeprefix("file://"))), gated)
    ws = Workspace(store, cache_dir=tmp_path / "cache")
    return pv, store, ReadOnlyFS(ws.reader, ws.reader.record(pv.id), FsOptions(**opts))  # type: ignore[arg-type]


async def _read(fs: ReadOnlyFS, path: str) -> bytes:
    ino = ROOT_INO
    for part in path.split("/"):
        ino = (await fs.lookup(ino, part)).ino
    fh = await fs.open(ino, os.O_RDONLY)
    try:
        return bytes(await fs.read(fh, 0, 1 << 20))
    finally:
        fs.release(fh)


def test_readers_never_wait_for_a_stalled_pack_fetch(file_store_url: str, tmp_path: Path) -> None:
    """Pack A's whole GET hangs. Files of pack B, other files of A (by ranged GETs after pack_wait)
    and A's own first file still read, while A's fetch is still hanging."""
    pv, store, fs = _setup(file_store_url, tmp_path, 2, "first", pack_wait=0.2)
    a, b = pv.in_pack(pv.packs[0]), pv.in_pack(pv.packs[1])

    async def main() -> None:
        async with trio.open_nursery() as n:
            fs.start(n)
            assert await _read(fs, a[0]) == pv.files[a[0]]  # a lone miss: one ranged GET
            stalled: dict[str, bytes] = {}

            async def second() -> None:  # the second miss in A: A's whole fetch, which hangs
                stalled[a[1]] = await _read(fs, a[1])

            n.start_soon(second)
            await trio.to_thread.run_sync(store.entered.wait)
            with trio.fail_after(20):  # never reached while the gate is shut, unless nobody waits for A
                for p in [*b[:5], *a[2:6], a[0]]:
                    assert await _read(fs, p) == pv.files[p], p
            assert not stalled and store.inflight == 1  # A's fetch still hangs: nobody waited for it
            store.release.set()
        assert stalled[a[1]] == pv.files[a[1]]

    trio.run(main)
    st = fs.blocks.stats
    assert st.pack_wait_timeouts >= 1 and st.ranged_reads >= 5 and st.pack_fetches == 2, st


def test_pack_fetches_stay_inside_the_memory_budget(file_store_url: str, tmp_path: Path) -> None:
    """Budget 2.5 packs: at most 2 whole-pack GETs at once; the other readers wait for memory
    and every file still reads right."""
    pack = 20 * 4096
    pv, store, fs = _setup(file_store_url, tmp_path, 8, "all", prefetch_budget=int(2.5 * pack),
                           pack_size_hint=pack, pack_wait=60)
    order = sorted(pv.files)
    random.Random(2).shuffle(order)
    got: dict[str, bytes] = {}

    async def main() -> None:
        async with trio.open_nursery() as n:
            fs.start(n)

            async def reader(paths: list[str]) -> None:
                for p in paths:
                    got[p] = await _read(fs, p)

            async with trio.open_nursery() as readers:
                for i in range(16):
                    readers.start_soon(reader, order[i::16])
                await trio.to_thread.run_sync(lambda: wait_until(
                    lambda: store.inflight == 2 and fs.blocks.stats.pack_budget_waits >= 1,
                    what="two pack fetches in flight and a reader waiting for memory"))
                store.release.set()
            n.cancel_scope.cancel()

    trio.run(main)
    assert got == pv.files
    assert store.max_inflight == 2
    assert fs.blocks.stats.pack_fetches == 8
