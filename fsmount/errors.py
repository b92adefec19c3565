"""Every expected failure of fsmount, each carrying the errno and exit code it maps to."""

from __future__ import annotations

import errno as _errno
import os


class FsmountError(Exception):
    """An expected failure: shown to the user as one line, never as a traceback."""

    errno: int = _errno.EIO
    exit_code: int = 1


class UsageError(FsmountError):
    """The user asked for something that cannot be done as asked."""

    errno = _errno.EINVAL
    exit_code = 2


class NotFoundError(FsmountError):
    """A dataset, version or path does not exist (what the user asked for is not there): ENOENT."""

    errno = _errno.ENOENT


class ObjectNotFound(FsmountError):
    """An object is missing from the store: an I/O failure (EIO), not a missing path.

    Not a NotFoundError on purpose: an object that a tree or record names and the store lacks is
    damage to the store, and must never be answered as "no such file" (nor cached as absence).
    Code that asks for an object that may legitimately be absent catches ObjectNotFound itself.
    """

    errno = _errno.EIO


class AmbiguousRefError(UsageError):
    """A dataset reference matches more than one version."""


class StateError(FsmountError):
    """The version is in the wrong lifecycle state for this operation."""

    errno = _errno.EPERM


class StoreError(FsmountError):
    """The store failed in a way the user must look at (bucket missing, bad URL...)."""


class ConditionalWritesUnsupported(StoreError):
    """The server accepts If-None-Match / If-Match but does not honour them: no safe updates."""

    errno = _errno.EOPNOTSUPP
    exit_code = 3


class StoreUnreachable(StoreError):
    """The store could not be reached (network down, endpoint wrong)."""

    errno = _errno.EIO
    exit_code = 3


class AccessDenied(StoreError):
    """The store refused our credentials."""

    errno = _errno.EACCES
    exit_code = 3


class PreconditionFailed(StoreError):
    """A conditional write lost a race: somebody else changed the object first."""


class ConflictError(FsmountError):
    """A concurrent change could not be merged after retries; the user should retry."""

    exit_code = 4


class FormatError(FsmountError):
    """A stored object is malformed, hostile, or written by a newer format."""

    errno = _errno.EIO


class IntegrityError(FsmountError):
    """Bytes do not match the hash that names them."""

    errno = _errno.EIO


class LockedError(FsmountError):
    """Another process holds a lock that excludes this operation (gc vs. writers)."""

    exit_code = 4


class FsError(FsmountError):
    """A filesystem operation failed with `errno` (ENOENT, ENOTEMPTY, EROFS...): what its caller sees.

    Raised by the read-only mount, the overlay and the writable mount alike; the FUSE adapter
    turns it into the reply in one place.
    """

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or os.strerror(err))
        self.errno = err


def errno_of(exc: BaseException) -> int:
    """The errno to report for any exception: its own if it carries one (OSError too), else EIO."""
    if isinstance(exc, FsmountError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return _errno.EIO


_FAILURE_ERRNOS = {_errno.EIO, _errno.ETIMEDOUT}


def is_failure(exc: BaseException) -> bool:
    """A failure of fsmount or below it (store, integrity, timeouts, the disk's EIO, bugs), not an
    ordinary error reply (ENOENT, ENOTEMPTY, EEXIST, ENOSPC...) that is the caller's business."""
    if isinstance(exc, StoreError | ObjectNotFound | IntegrityError | FormatError):
        return True  # a missing object is damage to the store, whatever errno it carries
    if isinstance(exc, FsmountError | OSError):
        return errno_of(exc) in _FAILURE_ERRNOS
    return True  # anything else is a bug
