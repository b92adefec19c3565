"""An ObjectStore wrapper that simulates a crash at the N-th write: crash-safety tests for any store."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path

from fsmount.store.base import ObjectInfo, ObjectStore, content_hash


class SimulatedCrash(BaseException):
    """The process died here. A BaseException, so no `except Exception` (or FsmountError) handles it."""


class FaultyStore(ObjectStore):
    """Passes every call to `inner`, counting writes (put, put_conditional, delete).

    With `crash_at=N`, writes 1..N-1 happen, write N does not, and SimulatedCrash is raised
    from it and from every call after it (a dead process writes nothing more; writes other
    threads had already sent complete). With `torn=True`, a crashing put of a content-addressed
    object that is not in the store yet first leaves its first half at the key, as a server that
    keeps the partial object of an interrupted PUT does (file:// and S3 stores only).
    `crash_at=None` just counts: a clean run tells how many write points a sweep has to cover.
    `crash_on(op, key)` picks the crashing write by what it is instead (the first for which it
    returns True).
    """

    def __init__(
        self,
        inner: ObjectStore,
        crash_at: int | None = None,
        *,
        torn: bool = False,
        crash_on: Callable[[str, str], bool] | None = None,
    ) -> None:
        self.inner = inner
        self.url = inner.url
        self.crash_at = crash_at
        self.crash_on = crash_on
        self.torn = torn
        self.writes = 0
        self.crashed_on: str | None = None  # "put objects/..": the write that crashed
        self._lock = threading.Lock()

    def _alive(self) -> None:
        if self.crashed_on is not None:
            raise SimulatedCrash(f"the process crashed before ({self.crashed_on})")

    def _write(self, op: str, key: str, data: bytes | None = None) -> None:
        with self._lock:
            self._alive()
            self.writes += 1
            if self.writes != self.crash_at and not (self.crash_on is not None and self.crash_on(op, key)):
                return
            self.crashed_on = f"{op} {key}"
        if self.torn and op == "put" and data and content_hash(key) is not None \
                and self.inner.head(key) is None:
            self._leave_partial(key, data[: len(data) // 2])
        raise SimulatedCrash(f"simulated crash at write {self.writes} ({op} {key})")

    def _leave_partial(self, key: str, data: bytes) -> None:
        root = getattr(self.inner, "root", None)
        client = getattr(self.inner, "client", None)
        if isinstance(root, Path):
            path = root / key
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_bytes(data)
        elif client is not None:
            client.put_object(Bucket=self.inner.bucket, Key=self.inner.prefix + key, Body=data)  # type: ignore[attr-defined]
        else:
            raise TypeError(f"torn writes are not supported on {type(self.inner).__name__}")

    # -- writes ------------------------------------------------------------------------------

    def put(self, key: str, data: bytes) -> bool:
        self._write("put", key, data)
        return self.inner.put(key, data)

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        self._write("put_conditional", key, data)
        return self.inner.put_conditional(key, data, if_match)

    def delete(self, key: str) -> None:
        self._write("delete", key)
        self.inner.delete(key)

    def _replace(self, key: str, data: bytes) -> None:
        self._write("put", key, data)
        self.inner.replace(key, data)

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        self._alive()
        return self.inner.get(key)

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        self._alive()
        return self.inner.get_range(key, offset, length)

    def head(self, key: str) -> ObjectInfo | None:
        self._alive()
        return self.inner.head(key)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        self._alive()
        return self.inner.get_versioned(key)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        self._alive()
        return self.inner.list(prefix)

    def barrier(self) -> None:
        self._alive()
        self.inner.barrier()

    def close(self) -> None:
        """Leaves `inner` open: the test goes on using it, as the next process would."""
