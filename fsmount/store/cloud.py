"""What the cloud stores (s3://, gs://, azure://) share: write-once puts, conditional writes and the probe.

Each cloud store implements one primitive, `_write` (an upload that is a create-if-absent, a
replace-if-unchanged or a plain overwrite), and `_stat` (a HEAD that also returns the object's
version: ETag or generation). `put`, `put_conditional`, `_replace` and the conditional-write probe
are written here once, over those two, so every store keeps the same contract the same way.
"""

from __future__ import annotations

import hashlib
import logging
import threading
import time
import uuid
from abc import abstractmethod
from collections.abc import Callable, Hashable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from fsmount.errors import ConditionalWritesUnsupported, ObjectNotFound, PreconditionFailed, StoreError
from fsmount.store.base import ObjectInfo, ObjectStore, content_hash

log = logging.getLogger(__name__)

CONDITIONAL_WRITES_IGNORED = (
    "{what} ignores conditional writes ({cond}); fsmount cannot change versions on it safely"
)
PUT_ATTEMPTS = 5

# Whether each server (scheme, endpoint, bucket or container) honours its preconditions: probed once
# per process.
_CONDITIONAL_OK: dict[Hashable, bool] = {}
_PROBE_LOCK = threading.Lock()

T = TypeVar("T")


def conditional_writes_probed(ident: Hashable, probe: Callable[[], bool]) -> bool:
    """`probe()`'s answer for `ident`, run once per process (the first caller runs it, others wait)."""
    ok = _CONDITIONAL_OK.get(ident)
    if ok is None:
        with _PROBE_LOCK:
            ok = _CONDITIONAL_OK.get(ident)
            if ok is None:
                ok = probe()
                _CONDITIONAL_OK[ident] = ok
                log.debug("%s honours conditional writes: %s", ident, ok)
    return ok


def sha256_of(key: str, data: bytes) -> bytes:
    """The SHA-256 an upload records: the one a content-addressed key names (not computed again), else
    the body's own."""
    return content_hash(key) or hashlib.sha256(data).digest()


def sha256_hex(key: str, data: bytes) -> str:
    return sha256_of(key, data).hex()


def metadata_sha256(value: object) -> bytes | None:
    """The raw SHA-256 from a metadata value written by `sha256_hex`; None if absent or malformed."""
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None


def prefix_of(prefix: str) -> str:
    """A key prefix as stores keep it: '' or 'a/b/' (no leading slash, one trailing)."""
    return prefix.strip("/") + "/" if prefix.strip("/") else ""


@dataclass(frozen=True, slots=True)
class Transfers:
    """How a cloud store talks to its server: connections kept per pool, the timeouts of one attempt
    (seconds), and how many attempts the SDK's retry policy makes."""

    max_connections: int = 64
    connect_timeout: float = 5.0
    read_timeout: float = 60.0
    max_attempts: int = 5


class CloudStore(ObjectStore):
    """A bucket or container of a cloud SDK, with an optional key prefix.

    Subclasses implement `_write`, `_stat`, `_delete`, `_guard`, `_probe_ident` and `_other_version`;
    `check_conditional_writes` refuses a server that ignores the preconditions with `_ignored`
    (ConditionalWritesUnsupported).
    """

    _ignored: str  # the ConditionalWritesUnsupported message
    _read_timeout = 60.0  # this store's default
    # A damaged content object is replaced only over the version its HEAD saw, so a racing repair
    # is not undone (GCS generation, Azure ETag). S3 overwrites it plainly: If-Match on PutObject
    # is newer than If-None-Match on some servers, and every writer of that key sends the same bytes.
    _repair_if_unchanged = True

    def __init__(self, root: str, prefix: str, **options: Any) -> None:
        """`root` is the URL of the bucket or container ("gs://b"); `options` are Transfers' fields."""
        self.prefix = prefix_of(prefix)
        self.url = f"{root}/{self.prefix}".rstrip("/")
        self.transfers = Transfers(**{"read_timeout": self._read_timeout, **options})

    @abstractmethod
    def _write(self, key: str, data: bytes, version: str | None, *, create: bool = False) -> str:
        """Upload `data` at `key`: only if absent (`create`), only over `version` (an ETag or a
        generation), or unconditionally (neither). Returns the new version; raises
        PreconditionFailed when the condition does not hold."""

    @abstractmethod
    def _stat(self, key: str) -> tuple[ObjectInfo, str] | None:
        """(info, version) of the object at `key`, or None if there is none."""

    @abstractmethod
    def _probe_ident(self) -> Hashable:
        """Which server and bucket the probe's answer holds for."""

    @abstractmethod
    def _other_version(self, version: str) -> str:
        """A version that is certainly not `version` (for the probe's update that must fail)."""

    def _refuses_conditions(self, err: StoreError) -> bool:
        """Whether `err` says the server refuses conditional headers outright (S3's 501)."""
        return False

    def head(self, key: str) -> ObjectInfo | None:
        found = self._stat(key)
        return found[0] if found else None

    def put(self, key: str, data: bytes) -> bool:
        meant = content_hash(key)
        for attempt in range(PUT_ATTEMPTS):
            try:
                self._write(key, data, None, create=True)
                return True
            except PreconditionFailed:
                # It exists (or, on S3, a 409: another conditional write of it is in flight): only
                # trust "exists" once a HEAD sees it, and only if it is the object meant.
                found = self._stat(key)
                if found is not None:
                    info, version = found
                    if meant is None or self.is_intact(info, len(data), meant):
                        return False
                    try:  # damaged (an interrupted upload the server kept): write it again
                        self._write(key, data, version if self._repair_if_unchanged else None)
                        return True
                    except PreconditionFailed:
                        pass
                time.sleep(0.05 * 2**attempt)
        raise StoreError(f"could not write {key} to {self.url}: concurrent writes kept conflicting")

    def _replace(self, key: str, data: bytes) -> None:
        self._write(key, data, None)  # a single-request upload replaces the object atomically

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        self.check_conditional_writes()
        if if_match is None:
            return self._write(key, data, None, create=True)
        return self._write(key, data, if_match)

    def check_conditional_writes(self) -> None:
        """Refuse (ConditionalWritesUnsupported) a server that ignores the preconditions.

        Such servers (s3rver, gcp-storage-emulator, older MinIO and Ceph releases, some proxies)
        answer 200 to a write whose condition does not hold, so a lost race would look like a
        success and overwrite another process's change. Probed once per server and process.
        """
        if not conditional_writes_probed(self._probe_ident(), self._probe):
            raise ConditionalWritesUnsupported(self._ignored)

    def _probe(self) -> bool:
        """Create a probe object, then make two writes whose conditions cannot hold: both must fail."""
        key = f"locks/probe-{uuid.uuid4().hex}"
        body = b"fsmount conditional-write probe"
        try:
            version = self._write(key, body, None, create=True)
        except PreconditionFailed:
            raise
        except StoreError as e:  # S3 servers that refuse the headers outright (501)
            if self._refuses_conditions(e):
                return False
            raise
        try:
            for cond, create in ((None, True), (self._other_version(version), False)):
                try:
                    self._write(key, body, cond, create=create)
                    log.debug("%s accepted a write (create=%s, version %s) that must fail",
                              self.url, create, cond)
                    return False
                except PreconditionFailed:
                    pass
                except StoreError as e:
                    if self._refuses_conditions(e):
                        return False
                    raise
            return True
        finally:
            self.delete(key)

    def delete(self, key: str) -> None:
        try:
            self._delete(key)
        except ObjectNotFound:
            pass

    @abstractmethod
    def _delete(self, key: str) -> None:
        """Remove the object at `key` (ObjectNotFound where the SDK reports a missing one)."""

    @abstractmethod
    def _guard(self, what: str, key: str, fn: Callable[[], T]) -> T:
        """Run one SDK call; its failures become fsmount's errors (ObjectNotFound, PreconditionFailed,
        AccessDenied, StoreUnreachable, StoreError)."""

    def _iterate(self, what: str, prefix: str, make: Callable[[], Iterable[T]]) -> Iterator[T]:
        """The items of an SDK's paged listing, each page fetch guarded like any other call."""
        it = self._guard(what, prefix, lambda: iter(make()))
        while (item := self._guard(what, prefix, lambda: next(it, None))) is not None:
            yield item

