"""docs/FORMAT.md against the code, where the check is mechanical: constants, key names, field lists."""

from __future__ import annotations

import hashlib
import os
import re
import time
import uuid
from dataclasses import replace
from pathlib import Path

import boto3
import msgpack
import pytest

from fsmount.api.sync import gc
from fsmount.api.workspace import Workspace
from fsmount.commit.registry import create_state, update_state
from fsmount.errors import FormatError
from fsmount.format.hashing import hash_from_key, object_key, state_key
from fsmount.format.objects import EMPTY_TREE_BYTES, EMPTY_TREE_HASH, decode_tree
from fsmount.format.records import VersionRecord, VersionState
from fsmount.store import open_store
from fsmount.store.local import LocalStore

DOC = (Path(__file__).resolve().parent.parent / "docs" / "FORMAT.md").read_text()


def section(title_start: str) -> str:
    """The text of the `## ` or `### ` section whose title starts with `title_start`."""
    m = re.search(rf"^(#+) {re.escape(title_start)}.*$", DOC, re.MULTILINE)
    assert m, f"FORMAT.md has no section {title_start!r}"
    level = len(m.group(1))
    rest = DOC[m.end():]
    end = re.search(rf"^#{{1,{level}}} ", rest, re.MULTILINE)
    return rest[: end.start()] if end else rest


def says(text: str, phrase: str) -> bool:
    """Whether `text` contains `phrase`, whatever the line breaks."""
    return " ".join(phrase.split()) in " ".join(text.split())


def table_keys(text: str) -> list[str]:
    """The backticked keys in the first column of a markdown table, in order."""
    return re.findall(r"^\| `([a-z_]+)` \|", text, re.MULTILINE)


# -- the empty tree -----------------------------------------------------------------------


def test_empty_tree_bytes_and_hash_printed_in_the_doc_are_the_codes() -> None:
    text = section("The empty tree")
    blocks = re.findall(r"```\n([0-9a-f]+)\n```", text)
    assert blocks == [EMPTY_TREE_BYTES.hex(), EMPTY_TREE_HASH.hex()]
    assert says(text, f"the {len(EMPTY_TREE_BYTES)} bytes")
    assert hashlib.sha256(bytes.fromhex(blocks[0])).hexdigest() == blocks[1]
    # The Terms table repeats the hash.
    terms = re.search(r"\*\*EMPTY_TREE_HASH\*\* \| .*`([0-9a-f]{64})`", DOC)
    assert terms and terms.group(1) == EMPTY_TREE_HASH.hex()
    assert decode_tree(bytes.fromhex(blocks[0])).entries == []


# -- record and state fields -----------------------------------------------------------------


def _record() -> VersionRecord:
    return VersionRecord(
        id="a" * 32, project="p", name="n", version="1.0.0", parents=("b" * 32,), root=EMPTY_TREE_HASH,
        base=EMPTY_TREE_HASH, created=1.5, finalized=2.5, author="me", message="m", files=0, nbytes=0,
        block_size=4096,
    )


def _state(vid: str = "a" * 32) -> VersionState:
    return VersionState(
        id=vid, project="p", name="n", version="1.0.0", parents=(), state="draft", tags=("t",),
        description="", created=1.5, updated=1.5, author="me",
    )


def test_record_table_lists_exactly_the_keys_encode_writes_in_order() -> None:
    with_packs = replace(_record(), tree_packs=((EMPTY_TREE_HASH, 10),))  # the optional key, written last
    written = list(msgpack.unpackb(with_packs.encode(), raw=False).keys())
    assert table_keys(section("5. Version record")) == written
    assert "tree_packs" not in msgpack.unpackb(_record().encode(), raw=False)  # absent when empty


def test_state_table_lists_exactly_the_keys_encode_writes_in_order() -> None:
    written = list(msgpack.unpackb(_state().encode(), raw=False).keys())
    assert table_keys(section("6. State object")) == written


def test_record_floats_are_float64_on_the_wire() -> None:
    data = _record().encode()
    # "created" (a7 + 7 bytes) followed by 0xcb: msgpack float 64, as §3 says.
    assert b"\xa7created\xcb" in data and b"\xa9finalized\xcb" in data
    assert b"\xa7updated\xcb" in _state().encode()


# -- the format number rule ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("fmt", "message"),
    [
        (2, "upgrade fsmount"),
        (0, "no valid format number"),
        (-1, "no valid format number"),
        (True, "no valid format number"),
        (1.0, "no valid format number"),
        ("1", "no valid format number"),
        (None, "no valid format number"),
    ],
)
def test_format_number_rule_as_the_doc_states_it(fmt: object, message: str) -> None:
    assert says(section("3. Encoding"), message)
    obj: dict[str, object] = {"type": "tree", "entries": []}
    if fmt is not None:
        obj = {"format": fmt, **obj}
    with pytest.raises(FormatError, match=message):
        decode_tree(msgpack.packb(obj, use_bin_type=True))


# -- file:// lock stripes --------------------------------------------------------------------


def stripe_by_the_doc(key: str) -> str:
    """§2 in code: first byte of SHA-256 of the relative key (UTF-8), mod 64, two decimal digits."""
    return f".locks/{hashlib.sha256(key.encode('utf-8')).digest()[0] % 64:02d}"


def test_lock_stripe_wording_is_the_one_description() -> None:
    text = section("Keys")
    for phrase in ("`.locks/NN`", "SHA-256(K encoded as UTF-8), modulo 64", "two decimal digits"):
        assert says(text, phrase)
    assert "replaced by" not in DOC  # the old `.locks/<key with "/" replaced by "_">` is gone
    assert "`.locks/<key>`" not in DOC


def _locks(root: Path) -> set[str]:
    return {f".locks/{p.name}" for p in (root / ".locks").iterdir()} if (root / ".locks").exists() else set()


def test_the_docs_lock_file_example_is_what_the_store_uses(tmp_path: Path) -> None:
    m = re.search(r"the key\s+`(state/[0-9a-f]{32})`\s+uses\s+`(\.locks/\d\d)`", DOC)
    assert m, "FORMAT.md lost its lock-file example"
    key, lock = m.groups()
    assert stripe_by_the_doc(key) == lock
    store = LocalStore(tmp_path / "store")
    create_state(store, _state(key.removeprefix("state/")))
    assert _locks(store.root) == {lock}


def test_writing_state_objects_locks_the_file_the_doc_names(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    seen: set[str] = set()
    for _ in range(12):
        vid = uuid.uuid4().hex
        before = _locks(store.root)
        create_state(store, _state(vid))
        update_state(store, vid, lambda st: setattr(st, "description", "changed"))
        new = _locks(store.root) - before
        expected = stripe_by_the_doc(state_key(vid))
        assert new <= {expected}  # a stripe used before creates no new file
        assert expected in _locks(store.root)
        seen.add(expected)
    assert len(seen) > 1  # the ids really spread over the stripes


# -- object keys --------------------------------------------------------------------------------


def test_hash_from_key_accepts_exactly_what_object_key_writes() -> None:
    for n in range(50):
        h = hashlib.sha256(str(n).encode()).digest()
        assert hash_from_key(object_key(h)) == h


@pytest.mark.parametrize(
    "mangle",
    [
        lambda k: k.upper(),  # upper-case hex, folder and all
        lambda k: k[:11] + k[11:].upper(),  # upper-case name in the right folder
        lambda k: "objects/00/" + k[11:] if not k[11:].startswith("00") else "objects/01/" + k[11:],
        lambda k: "objects/" + k[11:],  # no folder
        lambda k: "prefix/" + k,  # not under objects/
        lambda k: k[:-1],  # 63 digits
        lambda k: k + "0",  # 65 digits
        lambda k: k[:-1] + "g",  # not hex
        lambda k: k + "\n",
        lambda k: k.replace("objects/", "objects//"),
    ],
)
def test_hash_from_key_refuses_anything_else(mangle: object) -> None:
    key = object_key(hashlib.sha256(b"x").digest())
    assert callable(mangle)
    assert hash_from_key(mangle(key)) is None
    assert says(section("Keys"), "with `<h>` 64 lowercase hex digits and the folder equal to its first two")


def test_gc_leaves_non_object_keys_alone(tmp_path: Path) -> None:
    """The doc: keys under objects/ that are not object keys are neither counted nor deleted."""
    store = LocalStore(tmp_path / "store")
    h = hashlib.sha256(b"garbage").digest()
    good, upper = object_key(h), object_key(h)[:11] + h.hex().upper()
    wrong = f"objects/{'01' if h.hex()[:2] != '01' else '02'}/{h.hex()}"
    for k in (good, upper, wrong):
        store.put(k, b"garbage")
    old = time.time() - 10 * 3600
    for k in (good, upper, wrong):
        os.utime(store.root / k, (old, old))
    result = gc(Workspace(store), grace=0)
    assert result["deleted"] == 1
    assert not store.exists(good) and store.exists(upper) and store.exists(wrong)


# -- S3 keys ---------------------------------------------------------------------------------


def test_s3_keys_are_prefix_slash_key(s3_store_url: str, moto_server: object) -> None:
    bucket = s3_store_url.removeprefix("s3://").split("/", 1)[0]
    # s3://b//datasets/ is s3://b/datasets: leading and trailing '/' of PREFIX are dropped.
    store = open_store(f"s3://{bucket}//datasets/")
    vid = uuid.uuid4().hex
    create_state(store, _state(vid))
    keys = [o["Key"] for o in boto3.client("s3").list_objects_v2(Bucket=bucket)["Contents"]]
    assert keys == [f"datasets/{state_key(vid)}"]
    assert re.search(r"`s3://rbucket/some/prefix`\s+holds\s+`some/prefix/state/<id>`", DOC)
