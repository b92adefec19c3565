"""When a writable mount sends its changes to worker threads: only a call that blocked (slept in the
kernel: the disk) longer than SLOW_CHANGE counts, not one that computed or waited for a CPU."""

from __future__ import annotations

import os
import signal
import time

import pytest

from fsmount.fs.slowdisk import SLOW_CHANGE, DiskPace, OffCpuClock


class Clock:
    def __init__(self) -> None:
        self.t = 100.0

    def __call__(self) -> float:
        return self.t


def _spin(seconds: float) -> None:
    end = time.perf_counter() + seconds
    while time.perf_counter() < end:
        pass


def test_a_call_that_blocks_sends_changes_to_threads_for_a_while() -> None:
    clock = Clock()
    pace = DiskPace(clock)
    assert pace.fast()
    t0 = pace.start()
    time.sleep(SLOW_CHANGE * 2.5)  # what a stalled disk looks like to the thread: asleep in the kernel
    pace.timed(t0)
    assert pace.slow_changes == 1 and not pace.fast()
    clock.t += pace.offload_for
    assert pace.fast()


def test_a_call_that_computes_does_not() -> None:
    pace = DiskPace(Clock())
    t0 = pace.start()
    _spin(SLOW_CHANGE * 3)
    pace.timed(t0)
    assert pace.slow_changes == 0 and pace.fast()


@pytest.mark.skipif(not os.path.exists("/proc/thread-self/schedstat"), reason="no schedstat")
def test_a_call_preempted_on_a_busy_cpu_does_not() -> None:
    """Two spinning processes share this thread's one CPU: the call's wall time is mostly run-queue
    wait (the thread was runnable, not blocked), which says nothing about the disk."""
    cpu = min(os.sched_getaffinity(0))
    old = os.sched_getaffinity(0)
    children = []
    for _ in range(2):
        pid = os.fork()
        if pid == 0:  # pragma: no cover - the child spins until killed
            os.sched_setaffinity(0, {cpu})
            while True:
                pass
        children.append(pid)
    try:
        os.sched_setaffinity(0, {cpu})
        pace = DiskPace(Clock())
        clock = OffCpuClock()
        wall0, cpu0, off0 = time.perf_counter(), time.thread_time(), clock()
        t0 = pace.start()
        _spin(SLOW_CHANGE * 5)
        pace.timed(t0)
        wall, used, off = time.perf_counter() - wall0, time.thread_time() - cpu0, (clock() - off0) / 1e9
        assert wall - used > SLOW_CHANGE * 1.5, "the CPU was not shared: nothing tested"
        assert off < SLOW_CHANGE and pace.slow_changes == 0 and pace.fast()
    finally:
        os.sched_setaffinity(0, old)
        for pid in children:
            os.kill(pid, signal.SIGKILL)
            os.waitpid(pid, 0)
