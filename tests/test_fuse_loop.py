"""pyfuse3's request loop, quick path: a waiting request is read at once, yet other work still runs."""

from __future__ import annotations

import json
import os
import random
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pyfuse3
import pytest
import trio
import trio.testing

from fsmount.fs import fuse_loop
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli
from tests.pack_fixtures import MiB, make_packed_version, small_files


@pytest.fixture
def pipe() -> Iterator[tuple[int, int]]:
    r, w = os.pipe()
    try:
        yield r, w
    finally:
        os.close(r)
        os.close(w)


def test_a_ready_fd_is_returned_without_a_scheduler_pass_up_to_the_burst(pipe: tuple[int, int]) -> None:
    r, w = pipe
    stats = fuse_loop.LoopStats()
    low = fuse_loop._LowLevel(3, stats)

    async def main() -> None:
        os.write(w, b"x")
        with trio.testing.assert_no_checkpoints():
            for _ in range(3):
                await low.wait_readable(r)
        assert (stats.direct, stats.scheduled) == (3, 0)
        with trio.testing.assert_checkpoints():  # the burst is spent: one pass through trio
            await low.wait_readable(r)
        assert (stats.direct, stats.scheduled) == (3, 1)
        with trio.testing.assert_no_checkpoints():  # and a new burst starts
            await low.wait_readable(r)
        assert (stats.direct, stats.scheduled) == (4, 1)

    trio.run(main)


def test_an_empty_fd_waits_through_trio_until_a_request_comes(pipe: tuple[int, int]) -> None:
    r, w = pipe
    stats = fuse_loop.LoopStats()
    low = fuse_loop._LowLevel(16, stats)

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(trio.to_thread.run_sync, os.write, w, b"x")
            await low.wait_readable(r)
        assert (stats.direct, stats.scheduled) == (0, 1)
        assert os.read(r, 1) == b"x"

    trio.run(main)


def test_the_quick_lock_still_excludes_and_hands_over(pipe: tuple[int, int]) -> None:
    lock = fuse_loop._QuickLock()
    order: list[str] = []

    async def holder(name: str) -> None:
        async with lock:
            order.append(f"{name} in")
            await trio.sleep(0)  # the other task runs here, and must wait for the lock
            order.append(f"{name} out")

    async def main() -> None:
        async with trio.open_nursery() as n:
            n.start_soon(holder, "a")
            n.start_soon(holder, "b")

    trio.run(main)
    assert order in (["a in", "a out", "b in", "b out"], ["b in", "b out", "a in", "a out"])


def test_the_quick_lock_is_taken_back_at_once_and_wakes_one_waiter_at_a_time() -> None:
    """Five of pyfuse3's idle tasks parked on the lock: the task that served a request takes it
    again without a checkpoint, a release wakes one waiter only, and every waiter gets it in the end."""
    lock = fuse_loop._QuickLock()
    got: list[int] = []

    async def waiter(i: int) -> None:
        async with lock:
            got.append(i)

    async def main() -> None:
        async with trio.open_nursery() as n:
            await lock.__aenter__()
            for i in range(5):
                n.start_soon(waiter, i)
            await trio.testing.wait_all_tasks_blocked()
            assert len(lock._lot) == 5
            await lock.__aexit__()
            assert len(lock._lot) == 4  # one woken, not five
            with trio.testing.assert_no_checkpoints():
                await lock.__aenter__()  # free is free: no hand-over to the woken task
            await lock.__aexit__()  # the woken task has not run yet: nobody else is woken
            assert len(lock._lot) == 4
            await trio.testing.wait_all_tasks_blocked()
        assert sorted(got) == [0, 1, 2, 3, 4]

    trio.run(main)


def test_install_is_once_and_burst_zero_leaves_pyfuse3_alone(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(pyfuse3, "trio", trio)
    assert fuse_loop.install(0) is None and pyfuse3.trio is trio  # type: ignore[attr-defined]
    stats = fuse_loop.install(8)
    assert stats is not None and pyfuse3.trio is not trio  # type: ignore[attr-defined]
    assert fuse_loop.install(4) is stats  # the same view, its burst updated
    view = pyfuse3.trio  # type: ignore[attr-defined]
    assert view.lowlevel.burst == 4
    assert view.open_nursery is trio.open_nursery and view.lowlevel.current_task is trio.lowlevel.current_task


def _status(mnt: Path) -> dict[str, Any]:
    counters: dict[str, Any] = json.loads(run_cli("status", str(mnt), "--json").stdout)["counters"]
    return counters


@pytest.mark.fuse
@pytest.mark.usefixtures("require_fuse")
@pytest.mark.parametrize("burst", ["16", "0"])
def test_a_mount_serves_concurrent_readers_through_the_quick_loop(
        burst: str, file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMOUNT_FUSE_BURST", burst)
    files = small_files(600, 6, lo=512, hi=8 * 1024)
    pv = make_packed_version(file_store_url, files, pack_size=MiB)
    order = sorted(files)
    random.Random(3).shuffle(order)
    with cli_mount(pv.id, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        with ThreadPoolExecutor(16) as pool:
            got = dict(zip(order, pool.map(lambda p: (mnt / p).read_bytes(), order), strict=True))
        c = _status(mnt)
    assert got == files
    assert c["errors"] == 0
    if burst == "0":
        assert "fuse_direct" not in c
    else:  # each file is a LOOKUP, an OPEN and a RELEASE: some of them were waiting already
        assert c["fuse_direct"] > 0 and c["fuse_direct"] + c["fuse_scheduled"] >= 2 * len(files), c
