"""Content hashing and the store keys derived from hashes and version ids."""

from __future__ import annotations

import hashlib
import re
import uuid

HASH_LEN = 32
_ID_RE = re.compile(r"^[0-9a-f]{32}$")
_OBJECT_KEY_RE = re.compile(r"objects/([0-9a-f]{2})/(\1[0-9a-f]{62})")


def digest(data: bytes | memoryview) -> bytes:
    """SHA-256 of `data`: the name of every content-addressed object."""
    return hashlib.sha256(data).digest()


def object_key(h: bytes) -> str:
    """Store key of a content-addressed object (block or tree)."""
    hx = h.hex()
    return f"objects/{hx[:2]}/{hx}"


def hash_from_key(key: str) -> bytes | None:
    """Inverse of object_key: the hash of `objects/<h[0:2]>/<h>`, else None.

    Only exactly what object_key writes is an object key: 64 lowercase hex digits in the
    folder named by their first two. Anything else under objects/ (upper-case hex, a wrong
    folder, a stray file) is not an object, so gc neither counts nor deletes it.
    """
    m = _OBJECT_KEY_RE.fullmatch(key)
    return bytes.fromhex(m.group(2)) if m else None


def new_version_id() -> str:
    """A fresh, globally unique version id: 32 lowercase hex digits."""
    return uuid.uuid4().hex


def is_version_id(text: str) -> bool:
    """32 lowercase hex digits and nothing else (`$` would let a trailing newline through)."""
    return _ID_RE.fullmatch(text) is not None


def record_key(version_id: str) -> str:
    """Store key of a finalized version's immutable record."""
    return f"versions/{version_id}"


def state_key(version_id: str) -> str:
    """Store key of a version's mutable state (lifecycle state, tags, description)."""
    return f"state/{version_id}"
