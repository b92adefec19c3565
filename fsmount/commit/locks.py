"""Store-wide locks that keep `gc` from deleting objects a running upload or commit relies on.

Both sides write their lock first and look for the other side's second, so at least one
of two racing processes sees the other (restic's scheme). Locks are refreshed while held
and are stale after STALE_AFTER seconds without a refresh (a crashed holder). A holder whose
lock is gone, was replaced, or could not be refreshed for LOST_AFTER seconds has *lost* it:
others may take it for stale, so the holder stops (`Lock.check` raises LockLost) before it
deletes, finalizes or uploads anything more.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fsmount.errors import FsmountError, LockedError, NotFoundError, PreconditionFailed
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

STALE_AFTER = 15 * 60.0
REFRESH_EVERY = 60.0
LOST_AFTER = STALE_AFTER / 2  # no successful refresh for this long: the lock counts as lost


class LockLost(LockedError):
    """This process no longer holds its lock; it stopped before doing anything the lock guards."""


def _body(kind: str, draft: str | None) -> bytes:
    body: dict[str, Any] = {
        "kind": kind, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()
    }
    if draft is not None:
        body["draft"] = draft
    return json.dumps(body).encode()


def _fresh_locks(store: ObjectStore, kind: str, mine: str) -> list[str]:
    now = time.time()
    return [
        info.key
        for info in store.list(f"locks/{kind}-")
        if info.key != mine and now - info.mtime < STALE_AFTER
    ]


def writer_drafts(store: ObjectStore) -> dict[str, float]:
    """Drafts named by fresh writer locks: draft id -> the newest such lock's store mtime."""
    now = time.time()
    out: dict[str, float] = {}
    for info in store.list("locks/writer-"):
        if now - info.mtime >= STALE_AFTER:
            continue
        try:
            body = json.loads(store.get(info.key))
        except (NotFoundError, ValueError):
            continue  # released meanwhile, or not a lock fsmount wrote
        draft = body.get("draft") if isinstance(body, dict) else None
        if isinstance(draft, str):
            out[draft] = max(out.get(draft, 0.0), info.mtime)
    return out


class Lock:
    """A held lock: refreshed by a thread; `lost` once it is gone or could not be refreshed in time."""

    def __init__(self, store: ObjectStore, kind: str, draft: str | None) -> None:
        self.store = store
        self.kind = kind
        self.draft = draft
        self.key = f"locks/{kind}-{uuid.uuid4().hex}"
        self.etag = store.put_conditional(self.key, _body(kind, draft), if_match=None)
        self.lost = False
        self.why = ""
        self._last_ok = time.monotonic()

    def _lose(self, why: str) -> None:
        if not self.lost:
            log.error("lost the %s lock %s: %s", self.kind, self.key, why)
        self.lost, self.why = True, why

    def refresh(self) -> None:
        """Rewrite the lock if it is unchanged; a lock that is gone or replaced is lost."""
        if self.lost:
            return
        try:
            self.etag = self.store.put_conditional(self.key, _body(self.kind, self.draft), if_match=self.etag)
            self._last_ok = time.monotonic()
        except (PreconditionFailed, NotFoundError):
            self._lose("it was removed or replaced by another process (taken for stale?)")
        except FsmountError as e:
            log.warning("could not refresh lock %s: %s", self.key, e)
            if time.monotonic() - self._last_ok > LOST_AFTER:
                self._lose(f"no refresh succeeded for {LOST_AFTER:.0f} s ({e})")

    def check(self, verify: bool = False) -> None:
        """Raise LockLost if the lock is lost; with `verify`, first look that it is still in the store."""
        if not self.lost and time.monotonic() - self._last_ok > LOST_AFTER:
            self._lose(f"no refresh succeeded for {LOST_AFTER:.0f} s")
        if verify and not self.lost:
            try:
                if self.store.head(self.key) is None:
                    self._lose("it is no longer in the store (taken for stale?)")
            except FsmountError as e:
                log.warning("could not check lock %s: %s", self.key, e)
        if self.lost:
            raise LockLost(f"lost the {self.kind} lock ({self.why}); stopped before changing anything more")


@contextlib.contextmanager
def _held(
    store: ObjectStore, kind: str, excluded_by: tuple[str, ...], what: str, draft: str | None = None
) -> Iterator[Lock]:
    lock = Lock(store, kind, draft)
    try:
        for other in excluded_by:
            found = _fresh_locks(store, other, lock.key)
            if found:
                raise LockedError(f"{what}: a {other} is running on this store ({found[0]}); try again later")
        stop = threading.Event()

        def refresh() -> None:
            while not stop.wait(REFRESH_EVERY):
                lock.refresh()

        t = threading.Thread(target=refresh, name=f"lock-{kind}", daemon=True)
        t.start()
        try:
            yield lock
        finally:
            stop.set()
            t.join()
    finally:
        try:
            store.delete(lock.key)
        except FsmountError as e:
            log.warning("could not remove lock %s: %s", lock.key, e)


def writer_lock(store: ObjectStore, draft: str | None = None) -> contextlib.AbstractContextManager[Lock]:
    """Held while blocks are uploaded and a version is finalized; excludes gc only.

    `draft` names the draft written for (the lock body's `draft` field): while a fresh lock
    names it, the draft is live whatever its state's `updated` says.
    """
    return _held(store, "writer", ("gc",), "cannot write now", draft)


def gc_lock(store: ObjectStore) -> contextlib.AbstractContextManager[Lock]:
    """Held by gc; excludes writers and other gcs."""
    return _held(store, "gc", ("writer", "gc"), "cannot collect garbage now")
