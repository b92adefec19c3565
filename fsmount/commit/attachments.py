"""A version's metadata attachments: content-addressed blobs plus a per-version index (FORMAT.md §14).

Blobs are `attachments/<h[0:2]>/<h>` (write-once, named by their SHA-256); `metadata/<id>` maps
each attachment name to its kind, size and hash and changes only by conditional writes, so two
processes attaching different names at once both land.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Callable

from fsmount.commit import registry
from fsmount.commit.locks import writer_lock
from fsmount.errors import (
    FormatError,
    IntegrityError,
    NotFoundError,
    ObjectNotFound,
    UsageError,
)
from fsmount.format import names
from fsmount.format.hashing import digest
from fsmount.format.records import ATTACHMENT_KINDS, Attachment, MetadataIndex
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

MAX_ATTACHMENT_BYTES = 64 * 2**20
INDEX_PREFIX = "metadata/"
BLOB_PREFIX = "attachments/"


def index_key(version_id: str) -> str:
    return INDEX_PREFIX + version_id


def blob_key(h: bytes) -> str:
    hx = h.hex()
    return f"{BLOB_PREFIX}{hx[:2]}/{hx}"


_BLOB_KEY_RE = re.compile(r"attachments/([0-9a-f]{2})/(\1[0-9a-f]{62})")


def hash_from_blob_key(key: str) -> bytes | None:
    """Inverse of blob_key; None for anything else under attachments/ (gc leaves it alone)."""
    m = _BLOB_KEY_RE.fullmatch(key)
    return bytes.fromhex(m.group(2)) if m else None


def read_index(store: ObjectStore, version_id: str) -> MetadataIndex:
    """The version's attachments (an empty index when it has none), with the etag to update it."""
    try:
        data, etag = store.get_versioned(index_key(version_id))
    except (ObjectNotFound, NotFoundError):
        return MetadataIndex(version_id, {}, 0.0, None)
    try:
        idx = MetadataIndex.decode(data, etag)
    except FormatError as e:
        raise FormatError(f"{index_key(version_id)}: {e}") from None
    if idx.id != version_id:
        raise FormatError(f"{index_key(version_id)}: the index names another version ({idx.id})")
    return idx


def list_attachments(store: ObjectStore, version_id: str) -> list[Attachment]:
    """Name, kind, size and hash of each attachment, by name."""
    return sorted(read_index(store, version_id).attachments.values(), key=lambda a: a.name.encode())


def read_attachment(store: ObjectStore, version_id: str, name: str) -> tuple[Attachment, bytes]:
    """One attachment and its bytes, checked against the hash the index gives."""
    att = read_index(store, version_id).attachments.get(name)
    if att is None:
        raise NotFoundError(f"dataset version {version_id} has no metadata named {name!r}")
    try:
        data = store.get(blob_key(att.sha256))
    except ObjectNotFound:
        raise IntegrityError(f"metadata {name!r} of {version_id}: {blob_key(att.sha256)} is missing"
                             ) from None
    if len(data) != att.size or digest(data) != att.sha256:
        raise IntegrityError(f"metadata {name!r} of {version_id}: {blob_key(att.sha256)} is damaged")
    return att, data


def put_attachment(
    store: ObjectStore, version_id: str, name: str, kind: str, data: bytes, ui_visible: bool = True
) -> Attachment:
    """Store `data` as attachment `name` of the version (replacing one of that name)."""
    names.check_metadata_name(name)
    if kind not in ATTACHMENT_KINDS:
        raise UsageError(f"unknown metadata kind {kind!r}: use one of {', '.join(ATTACHMENT_KINDS)}")
    if len(data) > MAX_ATTACHMENT_BYTES:
        raise UsageError(
            f"metadata {name!r} is {len(data)} bytes: the limit is {MAX_ATTACHMENT_BYTES // 2**20} MiB")
    registry.read_state(store, version_id)  # the version exists (any state)
    att = Attachment(name, kind, len(data), digest(data), ui_visible)
    with writer_lock(store):  # gc must not take the blob between its write and the index's
        _put_blob(store, att.sha256, data)
        _update(store, version_id, lambda idx: idx.attachments.__setitem__(name, att))
    return att


def remove_attachment(store: ObjectStore, version_id: str, name: str) -> None:
    def change(idx: MetadataIndex) -> None:
        if idx.attachments.pop(name, None) is None:
            raise NotFoundError(f"dataset version {version_id} has no metadata named {name!r}")

    _update(store, version_id, change)


def delete_index(store: ObjectStore, version_id: str) -> None:
    """With the version: its index goes; blobs stay until gc (another version may share them)."""
    store.delete(index_key(version_id))


def _put_blob(store: ObjectStore, h: bytes, data: bytes) -> None:
    """Write-once; a present blob that is not these bytes (a torn PUT) is replaced."""
    key = blob_key(h)
    if store.put(key, data):
        return
    try:
        good = digest(store.get(key)) == h
    except ObjectNotFound:
        good = False
    if not good:
        log.warning("%s is damaged; writing it again", key)
        store.delete(key)
        store.put(key, data)


def _update(store: ObjectStore, version_id: str, change: Callable[[MetadataIndex], None]) -> MetadataIndex:
    """Read-modify-write of the index with the state's retry rule (FORMAT.md §6)."""
    return registry.read_modify_write(store, index_key(version_id), lambda: read_index(store, version_id),
                                      change, f"the metadata of {version_id} is being changed by others;"
                                      " try again")
