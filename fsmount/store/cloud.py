"""What the GCS and Azure stores share: the conditional-write probe cache and the SHA-256 metadata."""

from __future__ import annotations

import hashlib
import logging
import threading
from collections.abc import Callable, Hashable

from fsmount.store.base import content_hash

log = logging.getLogger(__name__)

CONDITIONAL_WRITES_IGNORED = (
    "{what} ignores conditional writes ({cond}); fsmount cannot change versions on it safely"
)

# Whether each server (scheme, endpoint, bucket or container) honours its preconditions: probed once
# per process, as S3Store does.
_CONDITIONAL_OK: dict[Hashable, bool] = {}
_PROBE_LOCK = threading.Lock()


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


def sha256_hex(key: str, data: bytes) -> str:
    """The SHA-256 an upload records: the one a content-addressed key names, else the body's own."""
    meant = content_hash(key)
    return (meant or hashlib.sha256(data).digest()).hex()


def metadata_sha256(value: object) -> bytes | None:
    """The raw SHA-256 from a metadata value written by `sha256_hex`; None if absent or malformed."""
    if not isinstance(value, str) or len(value) != 64:
        return None
    try:
        return bytes.fromhex(value)
    except ValueError:
        return None
