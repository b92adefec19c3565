"""Store-wide locks that keep `gc` from deleting objects a running upload or commit relies on.

Both sides write their lock first and look for the other side's second, so at least one
of two racing processes sees the other (restic's scheme). Locks are refreshed while held
and are stale after STALE_AFTER seconds without a refresh (a crashed holder).
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

from fsmount.errors import FsmountError, LockedError
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

STALE_AFTER = 15 * 60.0
REFRESH_EVERY = 60.0


def _body(kind: str) -> bytes:
    return json.dumps(
        {"kind": kind, "host": socket.gethostname(), "pid": os.getpid(), "time": time.time()}
    ).encode()


def _fresh_locks(store: ObjectStore, kind: str, mine: str) -> list[str]:
    now = time.time()
    return [
        info.key
        for info in store.list(f"locks/{kind}-")
        if info.key != mine and now - info.mtime < STALE_AFTER
    ]


@contextlib.contextmanager
def _held(store: ObjectStore, kind: str, excluded_by: tuple[str, ...], what: str) -> Iterator[None]:
    key = f"locks/{kind}-{uuid.uuid4().hex}"
    etag = store.put_conditional(key, _body(kind), if_match=None)
    try:
        for other in excluded_by:
            found = _fresh_locks(store, other, key)
            if found:
                raise LockedError(f"{what}: a {other} is running on this store ({found[0]}); try again later")
        stop = threading.Event()

        def refresh() -> None:
            nonlocal etag
            while not stop.wait(REFRESH_EVERY):
                try:
                    etag = store.put_conditional(key, _body(kind), if_match=etag)
                except FsmountError as e:
                    log.warning("could not refresh lock %s: %s", key, e)

        t = threading.Thread(target=refresh, name=f"lock-{kind}", daemon=True)
        t.start()
        try:
            yield
        finally:
            stop.set()
            t.join()
    finally:
        try:
            store.delete(key)
        except FsmountError as e:
            log.warning("could not remove lock %s: %s", key, e)


def writer_lock(store: ObjectStore) -> contextlib.AbstractContextManager[None]:
    """Held while blocks are uploaded and a version is finalized; excludes gc only."""
    return _held(store, "writer", ("gc",), "cannot write now")


def gc_lock(store: ObjectStore) -> contextlib.AbstractContextManager[None]:
    """Held by gc; excludes writers and other gcs."""
    return _held(store, "gc", ("writer", "gc"), "cannot collect garbage now")
