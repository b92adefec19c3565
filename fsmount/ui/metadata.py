"""Metadata attachments of a version, for the version page: one adapter over the API's metadata module.

The attachments (issue 13) live in fsmount/api/metadata.py: `list_metadata(store, id)` gives each
one's name, kind (json, csv, parquet, bytes), size, hash and ui_visible, and
`read_metadata_bytes(store, id, name)` its checked bytes. This adapter needs only those two, reads
the bytes without pandas, and shows nothing on an fsmount that has no such module.
"""

from __future__ import annotations

import importlib
import json
import logging
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any

from fsmount.errors import FsmountError
from fsmount.store.base import ObjectStore
from fsmount.ui import preview

log = logging.getLogger(__name__)
SHOWN_BYTES = 8 * 2**20  # a larger attachment shows its size and hash only


def _api() -> ModuleType | None:
    try:
        return importlib.import_module("fsmount.api.metadata")
    except ImportError:  # an fsmount without metadata attachments
        return None


API = _api()


@dataclass(slots=True)
class Attachment:
    """One attachment as shown: a table (CSV, Parquet), a JSON text, or its size and hash."""

    name: str
    kind: str  # "table", "json" or "bytes"
    size: int = 0
    sha256: str = ""
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    note: str = ""


def shown(name: str, kind: str, data: bytes, sha256: str = "") -> Attachment:
    """How one attachment's bytes are drawn, by the kind it was stored as."""
    base = Attachment(name, "bytes", len(data), sha256)
    if kind == "json":
        try:
            base.kind, base.text = "json", json.dumps(json.loads(data), indent=2)[:64 * 1024]
        except ValueError:
            base.note = "not valid JSON"
    elif kind in ("csv", "parquet"):
        pv = preview.csv_table(data, name) if kind == "csv" else preview.parquet_table(data)
        if pv.kind in ("table", "parquet"):
            base.kind, base.columns, base.rows, base.note = "table", pv.columns, pv.rows, pv.note
        else:
            base.note = pv.note
    return base


def attachments(store: ObjectStore, version_id: str, api: Any = API) -> list[Attachment]:
    """Every attachment of a version marked ui_visible; none when the API has no metadata."""
    if api is None or not hasattr(api, "list_metadata"):
        return []
    out = []
    try:
        listed = api.list_metadata(store, version_id)
    except FsmountError as e:
        log.warning("metadata of %s: %s", version_id, e)
        return [Attachment("(metadata)", "bytes", note=f"unreadable: {e}")]
    for d in listed:
        if not d.get("ui_visible", True):
            continue
        name, size, sha = str(d["name"]), int(d.get("size", 0)), str(d.get("hash", ""))
        if size > SHOWN_BYTES:
            out.append(Attachment(name, "bytes", size, sha, note="too large to show"))
            continue
        try:
            _, data = api.read_metadata_bytes(store, version_id, name)
        except FsmountError as e:
            out.append(Attachment(name, "bytes", size, sha, note=f"unreadable: {e}"))
            continue
        out.append(shown(name, str(d.get("kind", "bytes")), data, sha))
    return out
