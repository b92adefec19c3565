"""Filesystem errors with an errno chosen where they are raised (ENOENT, EROFS, ENODATA...)."""

from __future__ import annotations

import errno as _errno

from fsmount.errors import FsmountError


class FsError(FsmountError):
    """A filesystem-level failure; `errno` is what the caller of the syscall sees."""

    def __init__(self, err: int, message: str = "") -> None:
        super().__init__(message or _errno.errorcode.get(err, str(err)))
        self.errno = err


def errno_of(exc: BaseException) -> int:
    """The errno to report for any exception: its own if it carries one, else EIO."""
    if isinstance(exc, FsmountError):
        return exc.errno
    if isinstance(exc, OSError) and exc.errno:
        return exc.errno
    return _errno.EIO
