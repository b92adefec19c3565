"""Strict decoding shared by every stored object's codec: msgpack with str keys only, the format-number
rule, and the field checks (hashes, numbers, times, text, parents, tags). docs/FORMAT.md §3.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import msgpack

from fsmount.errors import FormatError
from fsmount.format.hashing import HASH_LEN
from fsmount.format.names import is_version_id

FORMAT = 1  # the format number written on every metadata object


def check_hash(h: object) -> bytes:
    if not isinstance(h, bytes) or len(h) != HASH_LEN:
        raise FormatError("malformed hash in tree")
    return h


def check_int(v: object, lo: int = 0, hi: int | None = None) -> int:
    if type(v) is not int or v < lo or (hi is not None and v > hi):
        raise FormatError("malformed number in tree")
    return v


def check_time(v: object, what: str) -> float:
    """`created`, `finalized`, `updated`: a finite int or float, never a bool, str or nil."""
    if type(v) not in (int, float) or not math.isfinite(v):  # type: ignore[arg-type]
        raise FormatError(f"malformed time {what!r}: {v!r}")
    return float(v)  # type: ignore[arg-type]


def check_text(v: object, what: str) -> str:
    if type(v) is not str:
        raise FormatError(f"malformed text field {what!r}")
    return v


def check_ids(v: object, own_id: str) -> tuple[str, ...]:
    """`parents`: an array of version ids, without duplicates and without the version's own id."""
    if not isinstance(v, tuple | list) or not all(is_version_id(p) for p in v):
        raise FormatError("malformed parents: not an array of version ids")
    if len(set(v)) != len(v) or own_id in v:
        raise FormatError("malformed parents: a parent repeats or is the version itself")
    return tuple(v)


def check_tags(v: object) -> tuple[str, ...]:
    if not isinstance(v, tuple | list) or not all(type(t) is str for t in v):
        raise FormatError("malformed tags: not an array of str")
    return tuple(v)


def check_format(obj: object, expected_type: str, newest: int = FORMAT) -> dict[str, Any]:
    """The format number rule; `newest` is the highest format this reader knows for the type."""
    if not isinstance(obj, dict):
        raise FormatError(f"malformed {expected_type} object")
    fmt = obj.get("format")
    if not isinstance(fmt, int) or isinstance(fmt, bool) or fmt < 1:
        raise FormatError(f"malformed {expected_type} object: no valid format number")
    if fmt > newest:
        raise FormatError(
            f"{expected_type} written by a newer fsmount (format {fmt}, this one reads {newest}):"
            " upgrade fsmount"
        )
    if obj.get("type") != expected_type:
        raise FormatError(f"expected a {expected_type} object, found {obj.get('type')!r}")
    return obj


def _str_keyed_map(pairs: Sequence[tuple[object, object]]) -> dict[str, Any]:
    """Every map, at any depth: keys must be str (FORMAT.md §3); a repeated key, the last counts."""
    for k, _ in pairs:
        if type(k) is not str:
            raise ValueError(f"map key {k!r} is not a str")
    return dict(pairs)  # type: ignore[arg-type]


def _no_ext(code: int, data: bytes) -> object:
    raise ValueError(f"msgpack ext type {code} is never valid")


def unpack_strict(data: bytes) -> object:
    """One msgpack object, strictly: str keys only, valid UTF-8, no ext types, no trailing bytes."""
    return msgpack.unpackb(
        data, raw=False, use_list=False, strict_map_key=True, object_pairs_hook=_str_keyed_map,
        ext_hook=_no_ext, timestamp=0,
    )


def unpack(data: bytes, expected_type: str, newest: int = FORMAT) -> dict[str, Any]:
    try:
        obj = unpack_strict(data)
    except (ValueError, msgpack.UnpackException, TypeError) as e:
        raise FormatError(f"undecodable {expected_type} object: {e}") from None
    return check_format(obj, expected_type, newest)
