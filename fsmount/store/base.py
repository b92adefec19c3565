"""The small interface every object store implements, and the URL map that opens one."""

from __future__ import annotations

import hashlib
import logging
from abc import ABC, abstractmethod
from collections.abc import Iterator
from dataclasses import dataclass

log = logging.getLogger(__name__)

CONDITIONAL_WRITES_IGNORED = (
    "this S3 server ignores conditional writes (If-None-Match/If-Match);"
    " fsmount cannot change versions on it safely"
)


def content_hash(key: str) -> bytes | None:
    """The SHA-256 a content-addressed key names (`objects/<h[0:2]>/<h>`), else None.

    Only these keys are known to the store layer to hold exactly the bytes their name hashes
    to; a put of such a key may replace a damaged object, never one of any other key.
    """
    parts = key.split("/")
    if len(parts) != 3 or parts[0] != "objects" or len(parts[2]) != 64 or parts[1] != parts[2][:2]:
        return None
    try:
        return bytes.fromhex(parts[-1])
    except ValueError:
        return None


@dataclass(frozen=True, slots=True)
class ObjectInfo:
    """What a listing or a HEAD tells about one object."""

    key: str
    size: int
    mtime: float  # seconds since the epoch, as the store reports it
    sha256: bytes | None = None  # the store's own checksum of the object, where it keeps one


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
        """Return the object's info, or None if it does not exist.

        `sha256` is filled in where the store keeps a checksum of the object (S3 objects
        written with ChecksumAlgorithm=SHA256); None elsewhere.
        """

    @abstractmethod
    def put(self, key: str, data: bytes) -> bool:
        """Store `data` under `key` unless the key exists. Never overwrites a good object.

        Returns True if this call created the object, False if it already existed. For a
        content-addressed key (see `content_hash`) an existing object that is not the one
        meant (wrong size, or a stored checksum that differs: the partial object of an
        interrupted PUT) is replaced, with a warning, and True is returned.
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

    def replace(self, key: str, data: bytes) -> None:
        """Overwrite the content-addressed object `key` with `data`, atomically (readers see the old
        bytes or the new, never a mix). Only for repairs: `data` must hash to the hash `key` names,
        so the object written is the one every reader expects; anything else raises ValueError.
        """
        meant = content_hash(key)
        if meant is None or hashlib.sha256(data).digest() != meant:
            raise ValueError(f"replace({key!r}): only a content-addressed key with bytes that hash to it")
        self._replace(key, data)

    def _replace(self, key: str, data: bytes) -> None:
        """Write `data` at `key` whatever is there, atomically; stores that support repair override it."""
        raise NotImplementedError(f"{type(self).__name__} cannot replace objects")

    def barrier(self) -> None:
        """Make every object written so far durable (no-op where a PUT is durable)."""

    def exists(self, key: str) -> bool:
        """Whether any object is at `key`. To decide that an object need not be written
        again, use `holds`: an object that exists may still be a damaged one."""
        return self.head(key) is not None

    def holds(self, key: str, size: int, sha256: bytes | None = None) -> bool:
        """Whether `key` holds the object meant: present, `size` bytes long and, where the store
        keeps a checksum, with SHA-256 `sha256` (by default the hash a content-addressed key
        names). A damaged object is logged and reported as not held, so it gets written again.
        """
        info = self.head(key)
        if info is None:
            return False
        return self.is_intact(info, size, sha256 if sha256 is not None else content_hash(key))

    def is_intact(self, info: ObjectInfo, size: int, sha256: bytes | None) -> bool:
        """Compare what a HEAD found with what was meant; a mismatch is logged as damage."""
        if info.size != size:
            log.warning("object %s in %s is damaged: %d bytes instead of %d (an interrupted upload?);"
                        " it will be replaced", info.key, self.url, info.size, size)
            return False
        if sha256 is not None and info.sha256 is not None and info.sha256 != sha256:
            log.warning("object %s in %s is damaged: its stored SHA-256 is %s, not %s;"
                        " it will be replaced", info.key, self.url, info.sha256.hex(), sha256.hex())
            return False
        return True

    def local_path(self, key: str) -> str | None:
        """The path of a file on a local disk holding object `key` (readers may read it in place,
        without copying it into the cache), or None: every store but an unnetworked file:// one."""
        return None

    def close(self) -> None:
        """Release connections; the store must not be used afterwards."""
