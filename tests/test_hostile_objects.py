"""Hostile trees, records and states, each crafted with msgpack by hand: strict decoding (FORMAT.md §3-§6)."""

from __future__ import annotations

import math
from typing import Any

import msgpack
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as hs

from fsmount.errors import FormatError, UsageError
from fsmount.format.names import parse_ref
from fsmount.format.objects import decode_tree
from fsmount.format.records import VersionRecord, VersionState

ID = "0123456789abcdef0123456789abcdef"
OTHER = "fedcba9876543210fedcba9876543210"
H = bytes(range(32))  # a 32-byte hash
ORIGIN = bytes.fromhex(ID)


def pack(obj: object) -> bytes:
    return msgpack.packb(obj, use_bin_type=True)


def tree(*entries: object) -> bytes:
    return pack({"format": 1, "type": "tree", "entries": list(entries)})


def file_entry(**change: Any) -> list[object]:
    """A valid one-block file entry of 5 bytes; `change` sets positions by name."""
    e: dict[str, Any] = {"name": "f", "kind": 0, "mode": 0o644, "mtime": 0, "size": 5, "sha": H,
                         "bs": 4096, "blocks": [H], "origin": ORIGIN}
    e.update(change)
    return list(e.values())


def dir_entry(**change: Any) -> list[object]:
    e: dict[str, Any] = {"name": "d", "kind": 1, "mode": 0o755, "mtime": 0, "tree": H, "nfiles": 0,
                         "nbytes": 0}
    e.update(change)
    return list(e.values())


def link_entry(**change: Any) -> list[object]:
    e: dict[str, Any] = {"name": "l", "kind": 2, "mode": 0o777, "mtime": 0, "target": "t", "origin": ORIGIN}
    e.update(change)
    return list(e.values())


def record(**change: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"format": 1, "type": "version", "id": ID, "project": "p", "name": "n",
                         "version": "1.0.0", "parents": [OTHER], "root": H, "base": H, "created": 1.5,
                         "finalized": 2.5, "author": "a", "message": "", "files": 0, "bytes": 0,
                         "block_size": 4096}
    d.update(change)
    return d


def state(**change: Any) -> dict[str, Any]:
    d: dict[str, Any] = {"format": 1, "type": "state", "id": ID, "project": "p", "name": "n",
                         "version": "1.0.0", "parents": [OTHER], "state": "final", "tags": ["a", "b"],
                         "description": "", "created": 1.5, "updated": 2.5, "author": "a"}
    d.update(change)
    return d


def test_the_valid_objects_here_decode() -> None:
    """The baselines the hostile variants below are made from: each change alone breaks them."""
    t = decode_tree(tree(dir_entry(), file_entry(), link_entry(target="x" * 4095)))
    assert [e.name for e in t.entries] == ["d", "f", "l"]
    assert decode_tree(tree(file_entry(bs=2**30, mtime=2**63 - 1), link_entry(mtime=-(2**63))))
    assert VersionRecord.decode(pack(record(block_size=2**30, created=1))).parents == (OTHER,)
    st = VersionState.decode(pack(state(created=0, updated=3)))
    assert st.tags == ("a", "b") and st.created == 0.0


@pytest.mark.parametrize(
    "entry",
    [
        dir_entry(kind=True),  # True == 1: not a directory
        file_entry(kind=False),
        dir_entry(kind=1.0),
        file_entry(kind=0.0),
        file_entry(bs=0),
        file_entry(bs=2**30 + 1),
        file_entry(bs=True),
        file_entry(mtime=2**63),  # uint64 is valid msgpack, but not an int64 mtime
        dir_entry(mtime=2**64 - 1),
        link_entry(mtime=1.0),
        link_entry(target="x" * 4096),
        link_entry(target="é" * 2048),  # 4,096 UTF-8 bytes in 2,048 characters
        file_entry(blocks=H),  # position 7 a bin, not an array
        file_entry(blocks="abcd"),
        file_entry(blocks={"a": H}),
        file_entry(origin=[1, 2]),
    ],
)
def test_hostile_entries_are_format_errors(entry: list[object]) -> None:
    with pytest.raises(FormatError):
        decode_tree(tree(entry))


@pytest.mark.parametrize(
    "change",
    [
        {"created": "1.5"},
        {"created": True},
        {"finalized": float("nan")},
        {"finalized": float("inf")},
        {"created": None},
        {"parents": ["not-an-id"]},
        {"parents": [OTHER, OTHER]},
        {"parents": [ID]},  # its own parent
        {"parents": OTHER},  # a str, not an array
        {"parents": [OTHER + "\n"]},
        {"id": ID + "\n"},
        {"block_size": 2**30 + 1},
        {"block_size": 0},
        {"files": True},
        {"bytes": -1},
        {"project": b"p"},
        {"message": None},
    ],
)
def test_hostile_records_are_format_errors(change: dict[str, Any]) -> None:
    with pytest.raises(FormatError):
        VersionRecord.decode(pack(record(**change)))


@pytest.mark.parametrize(
    "change",
    [
        {"created": "1.5"},
        {"updated": True},
        {"updated": float("nan")},
        {"created": -math.inf},
        {"parents": ["nope"]},
        {"parents": [OTHER, OTHER]},
        {"parents": [ID]},
        {"tags": "abc"},  # would be three tags
        {"tags": [b"a"]},
        {"tags": [1]},
        {"state": "gone"},
        {"id": "x"},
        {"description": 1},
    ],
)
def test_hostile_states_are_format_errors(change: dict[str, Any]) -> None:
    with pytest.raises(FormatError):
        VersionState.decode(pack(state(**change)))


def _with_bin_key(obj: dict[str, Any], key: bytes) -> bytes:
    """`obj` packed with one more top-level key that is bin, not str (msgpack's own packer allows it)."""
    return pack({**obj, key: 1})  # type: ignore[dict-item]


@pytest.mark.parametrize("decode", [decode_tree, VersionRecord.decode, VersionState.decode])
def test_non_str_map_keys_trailing_bytes_and_ext_types_are_refused(decode: Any) -> None:
    valid = {decode_tree: {"format": 1, "type": "tree", "entries": []}, VersionRecord.decode: record(),
             VersionState.decode: state()}[decode]
    decode(pack(valid))  # the baseline decodes
    with pytest.raises(FormatError):
        decode(_with_bin_key(valid, b"extra"))  # a bin key, even on a key nobody reads
    with pytest.raises(FormatError):
        decode(pack(valid) + b"\x00")  # trailing bytes
    with pytest.raises(FormatError):
        decode(pack({**valid, "extra": msgpack.ExtType(5, b"x")}))
    with pytest.raises(FormatError):  # an int key one level down
        decode(pack({**valid, "extra": {1: 2}}))


def test_a_bin_key_inside_a_tree_entry_value_is_refused() -> None:
    with pytest.raises(FormatError):
        decode_tree(tree(file_entry(blocks=[H, {b"k": 1}])))


def test_a_repeated_key_the_last_counts() -> None:
    """FORMAT.md §3: a key occurring twice, the last occurrence counts."""
    body = pack(state())
    # Re-pack as a map with one more pair: 'state' again, with another value.
    pairs = [*state().items(), ("state", "draft")]
    raw = bytes([0x80 | len(pairs)]) + b"".join(pack(k) + pack(v) for k, v in pairs)
    assert VersionState.decode(body).state == "final"
    assert VersionState.decode(raw).state == "draft"


# -- fuzzing: nothing but FormatError (or UsageError for REFs) ever comes out -------------------

_leaf = hs.one_of(
    hs.none(), hs.booleans(), hs.integers(min_value=-(2**63), max_value=2**64 - 1), hs.floats(),
    hs.text(max_size=8), hs.binary(max_size=40), hs.sampled_from([H, ORIGIN, ID, OTHER, 0, 1, 2, 4096]),
)
_values = hs.recursive(
    _leaf,
    lambda inner: hs.one_of(
        hs.lists(inner, max_size=10),
        hs.dictionaries(hs.one_of(hs.text(max_size=8), hs.sampled_from(list(record()))), inner, max_size=6),
    ),
    max_leaves=40,
)


def _shaped(kind: str) -> Any:
    """Maps that pass the format/type check, with fuzzed fields: reach the field validation."""
    base = {"tree": {"format": 1, "type": "tree"}, "version": record(), "state": state()}[kind]
    return hs.dictionaries(hs.sampled_from([*base, "entries"]), _values, max_size=6).map(
        lambda d: {**base, **d}
    )


_entries = hs.lists(
    hs.lists(_values, min_size=4, max_size=9).map(lambda e: ["n", *e[1:]]), max_size=4
).map(lambda es: {"format": 1, "type": "tree", "entries": es})

_DECODERS = [decode_tree, VersionRecord.decode, VersionState.decode]
_fuzz = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _only_format_errors(decode: Any, data: bytes) -> None:
    try:
        decode(data)
    except FormatError:
        pass


@_fuzz
@given(data=hs.binary(max_size=200))
def test_random_bytes_give_only_format_errors(data: bytes) -> None:
    for decode in _DECODERS:
        _only_format_errors(decode, data)


@_fuzz
@given(obj=hs.one_of(_values, _shaped("tree"), _shaped("version"), _shaped("state"), _entries))
def test_random_msgpack_gives_only_format_errors(obj: object) -> None:
    data = pack(obj)
    for decode in _DECODERS:
        _only_format_errors(decode, data)


@_fuzz
@given(ref=hs.one_of(hs.text(max_size=40), hs.text(alphabet="ab/@:tg \n\t\x85é", max_size=20)))
def test_random_refs_give_only_usage_errors(ref: str) -> None:
    try:
        parse_ref(ref)
    except UsageError:
        pass
