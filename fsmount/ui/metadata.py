"""Metadata attachments of a version, for the version page: one adapter over whatever the API offers."""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from typing import Any

from fsmount.api.dataset import Dataset
from fsmount.errors import FsmountError

log = logging.getLogger(__name__)
ROWS = 20


@dataclass(slots=True)
class Attachment:
    """One attachment as shown: a table (a DataFrame), a JSON text, or just a size (bytes)."""

    name: str
    kind: str  # "table", "json" or "bytes"
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    size: int = 0


def _names(ds: Dataset) -> list[str]:
    """The attachment names, from the API's listing if this fsmount has one (issue 13's metadata)."""
    for attr in ("list_metadata", "metadata_names"):
        fn = getattr(ds, attr, None)
        if callable(fn):
            names = fn()
            return [str(n) for n in (names.keys() if isinstance(names, dict) else names)]
    return []


def shown(name: str, obj: Any) -> Attachment:
    """How one attachment object is drawn."""
    if hasattr(obj, "columns") and hasattr(obj, "head") and hasattr(obj, "to_dict"):  # a DataFrame
        head = obj.head(ROWS)
        cols = [str(c) for c in head.columns]
        rows = [[str(v) for v in r] for r in head.itertuples(index=False, name=None)]
        return Attachment(name, "table", columns=cols, rows=rows, size=len(obj))
    if isinstance(obj, bytes | bytearray | memoryview):
        return Attachment(name, "bytes", size=len(obj))
    return Attachment(name, "json", text=json.dumps(obj, indent=2, default=str)[:64 * 1024])


def attachments(ds: Dataset) -> list[Attachment]:
    """Every attachment of `ds` the API lists; none when the API has no metadata yet."""
    out: list[Attachment] = []
    get = getattr(ds, "get_metadata", None)
    if not callable(get):
        return out
    for name in _names(ds):
        try:
            out.append(shown(name, get(name)))
        except (FsmountError, ValueError, OSError) as e:
            out.append(Attachment(name, "json", text=f"unreadable: {e}"))
    return out
