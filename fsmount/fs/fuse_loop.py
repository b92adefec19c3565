"""pyfuse3's request loop without trio scheduler passes per request: a /dev/fuse that already has a
request is read at once by the task that served the last one, and the loop yields to other work at
least every `burst` requests."""

from __future__ import annotations

import logging
import select
import types
from typing import Any

import pyfuse3
import trio

log = logging.getLogger(__name__)

_BAD = select.POLLERR | select.POLLHUP | select.POLLNVAL


class LoopStats:
    """How requests were waited for: `direct` (one was ready), `scheduled` (through trio)."""

    def __init__(self) -> None:
        self.direct = 0
        self.scheduled = 0


class _QuickLock:
    """The lock pyfuse3 takes around each wait for a request, so that one task at a time waits on
    /dev/fuse. trio.Lock hands itself to the next waiting task on release, so with pyfuse3's idle
    tasks parked on it, every request was a switch to another task. This one is unfair: free is
    free, the task that just served a request takes it again without a checkpoint, and a release
    wakes one waiter only when none is awake already (it takes over when the holder's handler
    waits for a thread or the store)."""

    def __init__(self) -> None:
        self._held = False
        self._woken = False
        self._lot = trio.lowlevel.ParkingLot()

    async def __aenter__(self) -> None:
        while self._held:
            try:
                await self._lot.park()
            finally:
                self._woken = False
        self._held = True

    async def __aexit__(self, *exc: object) -> None:
        self._held = False
        if self._lot and not self._woken:
            self._woken = True
            self._lot.unpark()


class _LowLevel:
    """trio.lowlevel, but `wait_readable` returns at once (no scheduler pass, no epoll_ctl) when
    /dev/fuse already holds a request, up to `burst` times in a row."""

    def __init__(self, burst: int, stats: LoopStats) -> None:
        self.burst = burst
        self.left = burst
        self.stats = stats
        self._poll: Any = None
        self._fd = -1

    def __getattr__(self, name: str) -> Any:
        return getattr(trio.lowlevel, name)

    def _ready(self, fd: int) -> bool:
        if fd != self._fd:
            self._poll = select.poll()
            self._poll.register(fd, select.POLLIN)
            self._fd = fd
        ready = self._poll.poll(0)
        return bool(ready) and ready[0][1] & _BAD == 0  # an error or a hang-up: trio's wait reports it

    async def wait_readable(self, fd: int) -> None:
        if self.left > 0 and self._ready(fd):
            self.left -= 1
            self.stats.direct += 1
            return
        self.left = self.burst
        self.stats.scheduled += 1
        await trio.lowlevel.wait_readable(fd)


class _TrioForPyfuse3(types.ModuleType):
    """What pyfuse3 sees as `trio`: the real module, with the two calls above swapped in."""

    def __init__(self, burst: int, stats: LoopStats) -> None:
        super().__init__("trio")
        self.lowlevel = _LowLevel(burst, stats)
        self.Lock = _QuickLock

    def __getattr__(self, name: str) -> Any:
        return getattr(trio, name)


def install(burst: int) -> LoopStats | None:
    """Give pyfuse3's request loop the quick path (before `pyfuse3.main`); None when `burst` is 0
    or this pyfuse3 does not wait for requests through its module-level `trio` (left as it is)."""
    if burst <= 0:
        return None
    current = getattr(pyfuse3, "trio", None)
    if isinstance(current, _TrioForPyfuse3):
        current.lowlevel.burst = current.lowlevel.left = burst
        return current.lowlevel.stats
    if current is not trio:
        log.debug("pyfuse3 has no module-level trio: its request loop stays as it is")
        return None
    stats = LoopStats()
    pyfuse3.trio = _TrioForPyfuse3(burst, stats)  # type: ignore[attr-defined]
    return stats
