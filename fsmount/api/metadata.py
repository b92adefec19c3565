"""Python objects as metadata attachments: a dict as JSON, a pandas DataFrame as CSV or Parquet, bytes.

The storage (blobs, index, size limit) is commit/attachments.py; this module only turns objects
into bytes and back. pandas (and pyarrow for Parquet) are optional (`pip install fsmount[metadata]`)
and imported only when a DataFrame is written or read, so every other command starts without them.
"""

from __future__ import annotations

import importlib
import io
import json
from typing import Any

from fsmount.commit import attachments
from fsmount.commit.attachments import MAX_ATTACHMENT_BYTES
from fsmount.errors import UsageError
from fsmount.format.records import Attachment
from fsmount.store.base import ObjectStore

__all__ = ["MAX_ATTACHMENT_BYTES", "encode", "get_metadata", "list_metadata", "read_metadata_bytes",
           "remove_metadata", "set_metadata", "set_metadata_bytes"]


def _optional(module: str) -> Any:
    """An optional dependency, imported on first use (pandas takes ~0.5 s to import)."""
    try:
        return importlib.import_module(module)
    except ImportError:
        raise UsageError(f"this needs {module}: pip install 'fsmount[metadata]'") from None


def _is_dataframe(obj: object) -> bool:
    return type(obj).__module__.startswith("pandas") and type(obj).__name__ == "DataFrame"


def encode(obj: object, fmt: str | None = None) -> tuple[str, bytes]:
    """(kind, bytes) for an object: bytes as they are, a DataFrame as CSV (or `fmt="parquet"`),
    anything else as JSON (keys sorted, so equal dicts store equal bytes)."""
    if isinstance(obj, bytes | bytearray | memoryview):
        return "bytes", bytes(obj)
    if _is_dataframe(obj):
        if fmt in (None, "csv"):
            return "csv", obj.to_csv(index=False).encode()  # type: ignore[attr-defined]
        if fmt == "parquet":
            _optional("pyarrow")
            buf = io.BytesIO()
            obj.to_parquet(buf)  # type: ignore[attr-defined]
            return "parquet", buf.getvalue()
        raise UsageError(f"unknown DataFrame format {fmt!r}: use csv or parquet")
    if fmt not in (None, "json"):
        raise UsageError(f"format {fmt!r} is for DataFrames; this object is stored as JSON")
    try:
        return "json", json.dumps(obj, sort_keys=True, ensure_ascii=False).encode()
    except (TypeError, ValueError) as e:
        raise UsageError(f"metadata must be bytes, a DataFrame or JSON-serialisable: {e}") from None


def decode(kind: str, data: bytes) -> Any:
    if kind == "bytes":
        return data
    if kind == "json":
        return json.loads(data)
    pd = _optional("pandas")
    if kind == "csv":
        return pd.read_csv(io.BytesIO(data))
    _optional("pyarrow")
    return pd.read_parquet(io.BytesIO(data))


def set_metadata(
    store: ObjectStore, version_id: str, obj: object, name: str = "metadata", ui_visible: bool = True,
    fmt: str | None = None,
) -> Attachment:
    kind, data = encode(obj, fmt)
    return attachments.put_attachment(store, version_id, name, kind, data, ui_visible)


def set_metadata_bytes(
    store: ObjectStore, version_id: str, name: str, kind: str, data: bytes, ui_visible: bool = True
) -> Attachment:
    """Attach bytes already encoded as `kind` (the CLI's --set FILE)."""
    return attachments.put_attachment(store, version_id, name, kind, data, ui_visible)


def remove_metadata(store: ObjectStore, version_id: str, name: str) -> None:
    attachments.remove_attachment(store, version_id, name)


def get_metadata(store: ObjectStore, version_id: str, name: str = "metadata") -> Any:
    att, data = attachments.read_attachment(store, version_id, name)
    return decode(att.kind, data)


def read_metadata_bytes(store: ObjectStore, version_id: str, name: str) -> tuple[Attachment, bytes]:
    """An attachment's stored bytes (for the CLI and the web page: no pandas needed)."""
    return attachments.read_attachment(store, version_id, name)


def list_metadata(store: ObjectStore, version_id: str) -> list[dict[str, Any]]:
    """Each attachment: name, kind, size, hash (hex), ui_visible; by name."""
    return [a.as_dict() for a in attachments.list_attachments(store, version_id)]
