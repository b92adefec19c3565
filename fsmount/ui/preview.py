"""Previews of one file, read through the cache with a size limit: image, text, CSV/JSON rows, Parquet."""

from __future__ import annotations

import csv
import io
import json
from dataclasses import dataclass, field
from typing import Any

from fsmount.cache.fetcher import ObjectReader
from fsmount.cache.file_range import packed_bytes, packed_locator
from fsmount.format.objects import FileEntry

try:  # Parquet previews only where pyarrow is installed (pandas users mostly have it)
    import pyarrow.parquet as pq
except ImportError:  # pragma: no cover - depends on the environment
    pq = None

DEFAULT_LIMIT = 16 * 2**20  # a file over this shows its size and hash only: no byte is read
TEXT_BYTES = 64 * 1024  # text and CSV previews read this much from the start
JSON_BYTES = 1 * 2**20  # a .json file is parsed whole up to this size
ROWS = 20
IMAGE_TYPES = {".png": "image/png", ".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".gif": "image/gif",
               ".webp": "image/webp", ".bmp": "image/bmp"}  # no SVG: it can carry script


@dataclass(slots=True)
class Preview:
    """What the preview page shows: kind is image, text, table, parquet, binary or too-big."""

    kind: str
    text: str = ""
    columns: list[str] = field(default_factory=list)
    rows: list[list[str]] = field(default_factory=list)
    schema: list[tuple[str, str]] = field(default_factory=list)
    note: str = ""


def suffix(name: str) -> str:
    dot = name.rfind(".")
    return name[dot:].lower() if dot > 0 else ""


def image_type(name: str) -> str | None:
    return IMAGE_TYPES.get(suffix(name))


def read_prefix(reader: ObjectReader, e: FileEntry, n: int) -> bytes:
    """The first `n` bytes of a file, block by block through the verified cache (a packed file by its
    own bytes, so a damaged neighbour in its pack does not hide it)."""
    loc = packed_locator(e)
    if loc is not None:
        return bytes(memoryview(packed_bytes(reader, e, loc))[:n])
    out = bytearray()
    for i, (h, off, length, pos) in enumerate(e.spans()):
        if pos >= n:
            break
        out += reader.span(h, off, length, isinstance(e.blocks[i], bytes))[: n - pos]
    return bytes(out)


def _is_binary(data: bytes) -> bool:
    if b"\0" in data[:8192]:
        return True
    try:
        data.decode()
    except UnicodeDecodeError as err:
        return err.start < len(data) - 3  # a multi-byte character cut at the end is still text
    return False


def _cell(v: Any) -> str:
    s = v if isinstance(v, str) else json.dumps(v, default=str)
    return s if len(s) <= 200 else s[:199] + "…"


def _table(records: list[Any]) -> Preview:
    if records and all(isinstance(r, dict) for r in records):
        cols: list[str] = []
        for r in records:
            cols += [str(k) for k in r if str(k) not in cols]
        return Preview("table", columns=cols, rows=[[_cell(r.get(c, "")) for c in cols] for r in records])
    return Preview("table", columns=["value"], rows=[[_cell(r)] for r in records])


def csv_table(data: bytes, name: str) -> Preview:
    text = data.decode(errors="replace")
    lines = text.splitlines()[: ROWS + 1]
    rows = list(csv.reader(lines, delimiter="\t" if suffix(name) == ".tsv" else ","))
    if not rows:
        return Preview("text", text="")
    return Preview("table", columns=rows[0], rows=[[_cell(c) for c in r] for r in rows[1:]])


def _json(reader: ObjectReader, e: FileEntry) -> Preview:
    if e.size > JSON_BYTES:
        return _text(read_prefix(reader, e, TEXT_BYTES), e, note="too large to parse: the first 64 KiB")
    data = read_prefix(reader, e, e.size)
    try:
        obj = json.loads(data)
    except ValueError:
        return _text(data, e, note="not valid JSON")
    if isinstance(obj, list):
        return _table(obj[:ROWS])
    return Preview("text", text=json.dumps(obj, indent=2, default=str)[:TEXT_BYTES])


def _jsonl(data: bytes) -> Preview:
    records = []
    for line in data.decode(errors="replace").splitlines()[:ROWS]:
        try:
            records.append(json.loads(line))
        except ValueError:
            break
    return _table(records)


def parquet_table(data: bytes) -> Preview:
    """Schema and first rows of a whole Parquet file's bytes (pyarrow, when installed)."""
    if pq is None:
        return Preview("binary", note="Parquet preview needs pyarrow (pip install pyarrow)")
    try:
        f = pq.ParquetFile(io.BytesIO(data))
        schema = [(fld.name, str(fld.type)) for fld in f.schema_arrow]
        table = next(f.iter_batches(batch_size=ROWS), None)
    except Exception as err:  # pyarrow raises several kinds for a damaged file
        return Preview("binary", note=f"not a readable Parquet file: {err}")
    rows: list[list[str]] = []
    if table is not None:
        cols = table.to_pydict()
        rows = [[_cell(cols[c][i]) for c in cols] for i in range(table.num_rows)]
    return Preview("parquet", columns=[s[0] for s in schema], rows=rows, schema=schema,
                   note=f"{f.metadata.num_rows} rows in {f.metadata.num_row_groups} row groups")


def _text(data: bytes, e: FileEntry, note: str = "") -> Preview:
    if _is_binary(data):
        return Preview("binary")
    cut = len(data) < e.size
    return Preview("text", text=data.decode(errors="replace"),
                   note=note or (f"the first {len(data):,} of {e.size:,} bytes" if cut else ""))


def preview(reader: ObjectReader, e: FileEntry, limit: int = DEFAULT_LIMIT) -> Preview:
    """The preview of file entry `e`; a file over `limit` is not read at all."""
    if e.size > limit:
        return Preview("too-big", note=f"over the preview limit of {limit:,} bytes")
    ext = suffix(e.name)
    if image_type(e.name):
        return Preview("image")
    if ext == ".parquet":
        return parquet_table(read_prefix(reader, e, e.size))
    if ext == ".json":
        return _json(reader, e)
    data = read_prefix(reader, e, TEXT_BYTES)
    if _is_binary(data):
        return Preview("binary")
    if ext in (".csv", ".tsv"):
        return csv_table(data, e.name)
    if ext in (".jsonl", ".ndjson"):
        return _jsonl(data)
    return _text(data, e)
