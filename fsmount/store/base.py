"""The small interface every object store implements, and the URL map that opens one."""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or a HEAD tells about one object."""

    key: str
    size: int
    mtime: float  # seconds since the epoch, as the store reports it


class ObjectStore(ABC):
    """A flat key -> bytes store with write-once puts and conditional writes.

    Keys are '/'-separated relative paths made of [A-Za-z0-9._-] parts.
    Implementations must be safe to call from many threads at once.
    """

    url: str

    @abstractmethod
    def get(self, key: str) -> bytes:
        """Return the whole object; raise ObjectNotFound if absent."""

    @abstractmethod
    def get_range(self, key: str, offset: int, length: int) -> bytes:
        """Return up to `length` bytes from `offset`; raise ObjectNotFound if absent."""

    @abstractmethod
    def head(self, key: str) -> ObjectInfo | None:
        """Return the object's info, or None if it does not exist."""

    @abstractmethod
    def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` unless the key exists. Never overwrites.

        Returns True if this call created the object, False if it already existed.
        """

    @abstractmethod
    def get_versioned(self, key: str) -> tuple[bytes, str]:
        """Return (data, etag) for a mutable object; raise ObjectNotFound if absent."""

    @abstractmethod
    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        """Write a mutable object atomically, only if it is unchanged.

        `if_match=None` creates the object only if it does not exist; otherwise the
        write happens only if the current etag equals `if_match`. Raises
        PreconditionFailed when the condition does not hold. Returns the new etag.
        """

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove an object; removing a missing one is not an error."""

    @abstractmethod
    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        """Yield every object whose key starts with `prefix`, in no particular order."""

    def barrier(self) -> None:
        """Make every object written so far durable (no-op where a PUT is durable)."""

    def exists(self, key: str) -> bool:
        return self.head(key) is not None

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
