"""Whether the overlay's disk is slow right now: changes run inline on the event loop until one of them
*blocked* longer than SLOW_CHANGE, then on worker threads for OFFLOAD_FOR seconds.

A worker-thread hop costs 0.1-0.4 ms on a loaded 2-core machine, a sqlite commit 20-50 us, so
changes run inline while the disk keeps up. What counts is the time a call spent blocked (asleep
in the kernel: the disk, a lock), not its wall time: on a loaded machine a thread is often
runnable but not running for 20 ms and more (preempted), which says nothing about the disk, and
offloading then only adds hops. The blocked time of the event-loop thread is wall time minus
its CPU time minus its run-queue wait, both from /proc/thread-self/schedstat (one pread, about
3 us). Where that file is missing, wall time minus thread CPU time is used.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from collections.abc import Callable

log = logging.getLogger(__name__)

SLOW_CHANGE = 0.02  # seconds blocked: a call slower than this inline means the overlay's disk is slow
OFFLOAD_FOR = 10.0  # seconds every change then runs on a worker thread


class OffCpuClock:
    """Nanoseconds the calling thread spent neither on a CPU nor waiting for one (cumulative,
    from an arbitrary origin): the difference of two readings is the time it was blocked."""

    def __init__(self) -> None:
        self._local = threading.local()

    def _fd(self) -> int:
        fd = getattr(self._local, "fd", None)
        if fd is None:
            try:
                fd = os.open("/proc/thread-self/schedstat", os.O_RDONLY | os.O_CLOEXEC)
            except OSError:
                fd = -1
            self._local.fd = fd
        return int(fd)

    def __call__(self) -> int:
        wall = time.perf_counter_ns()
        fd = self._fd()
        if fd >= 0:
            try:
                cpu, wait = os.pread(fd, 128, 0).split()[:2]
                return wall - int(cpu) - int(wait)
            except (OSError, ValueError):
                pass
        return wall - time.thread_time_ns()


class DiskPace:
    """Inline or offloaded: `fast()` says which; `timed(t0)` after an inline call started at
    `start()` switches to offloading when that call blocked longer than SLOW_CHANGE."""

    def __init__(self, now: Callable[[], float], blocked: Callable[[], int] | None = None,
                 slow: float = SLOW_CHANGE, offload_for: float = OFFLOAD_FOR) -> None:
        self._now = now  # the event loop's clock (trio.current_time)
        self._blocked = blocked or OffCpuClock()
        self.slow = slow
        self.offload_for = offload_for
        self.until = 0.0
        self.slow_changes = 0

    def fast(self) -> bool:
        return self._now() >= self.until

    def start(self) -> tuple[float, int]:
        return time.perf_counter(), self._blocked()

    def timed(self, t0: tuple[float, int], what: object = "write") -> None:
        took = time.perf_counter() - t0[0]
        if took <= self.slow:  # the common case costs no second reading
            return
        blocked = (self._blocked() - t0[1]) / 1e9
        if blocked <= self.slow:
            return
        log.debug("a call blocked %.1f ms (%.1f ms in all) on the event loop: the overlay's disk work"
                  " goes to worker threads for %d s (%s)", blocked * 1e3, took * 1e3, self.offload_for, what)
        self.until = self._now() + self.offload_for
        self.slow_changes += 1
