"""The grammar of FORMAT.md §7 (fsmount/format/names.py) and how the registry uses it on a real store."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from fsmount.commit import registry
from fsmount.commit.drafts import Drafts
from fsmount.errors import FormatError, NotFoundError, UsageError
from fsmount.format import names
from fsmount.format.names import Ref, RefKind, parse_ref
from fsmount.format.records import VersionState
from fsmount.store import open_store
from fsmount.store.base import ObjectStore

ID = "0123456789abcdef0123456789abcdef"


@pytest.mark.parametrize(
    ("text", "ref"),
    [
        (ID, Ref(RefKind.ID, ID)),
        ("0123", Ref(RefKind.PREFIX, "0123")),
        (ID[:31], Ref(RefKind.PREFIX, ID[:31])),
        ("tag:a b/@:", Ref(RefKind.TAG, "a b/@:")),
        ("vision/coco/train", Ref(RefKind.DATASET, project="vision/coco", name="train")),
        ("p/n@1.0@x/y", Ref(RefKind.VERSION, project="p", name="n", version="1.0@x/y")),
        ("p é/n ü@1", Ref(RefKind.VERSION, project="p é", name="n ü", version="1")),
    ],
)
def test_well_formed_refs_parse(text: str, ref: Ref) -> None:
    assert parse_ref(text) == ref


@pytest.mark.parametrize(
    "text",
    ["", " ", "b/d@", "b/d\n", "b/d\t", "\tb/d", "b/d\x85", "b//d", "/d", "b/", "b/d@1 0", "tag:", "tag: x",
     "d", "ABCD", ID.upper(), ID + "0", ID + "\n", "012", "0123\n", "b/tag:x", "tag:x\x7f", "b/d@" + "1" * 65,
     "p/" + "n" * 256, "p\udcff/n"],
)
def test_malformed_refs_are_usage_errors(text: str) -> None:
    with pytest.raises(UsageError):
        parse_ref(text)


def test_each_rule_of_the_grammar() -> None:
    ok = {names.check_name: ["n", "a b", "x.y-z_1", "é" * 127, "tagx"],
          names.check_project: ["p", "a/b/c", "a b/c d", "x" * 255],
          names.check_tag: ["t", "a/b@c:d", "x y", "tag:x"],
          names.check_version: ["1", "1.0.0-rc.1", "v" * 64, "2024/01@x"]}
    bad = {names.check_name: ["", " n", "n ", "a/b", "a@b", "tag:x", "a\nb", "é" * 128, "\u2028x", 1],
           names.check_project: ["", "/p", "p/", "a//b", "p@x", "tag:p", " p", "x" * 256, "a\x00b"],
           names.check_tag: ["", " t", "t\n", "x" * 256, "\x9b", b"t"],
           names.check_version: ["", "1 0", "1\u00a00", "v" * 65, "1\n", "\u3000"]}
    for check, values in ok.items():
        for v in values:
            assert check(v) == v
    for check, values in bad.items():
        for v in values:
            with pytest.raises(UsageError):
                check(v)


def test_ascii_digits_only_count_as_numbers() -> None:
    assert names.is_ascii_digits("10") and not names.is_ascii_digits("²") and not names.is_ascii_digits("٣")
    assert registry._version_key("1.²") > registry._version_key("1.9")  # a text part, no ValueError
    assert names.is_version_id(ID) and not names.is_version_id(ID + "\n") and not names.is_version_id(None)


# -- on a real store ----------------------------------------------------------------------------


@pytest.fixture
def store(file_store_url: str) -> ObjectStore:
    return open_store(file_store_url)


def _draft(
    store: ObjectStore, tmp_path: Path, project: str = "b", name: str = "d", **kw: object
) -> VersionState:
    return Drafts(tmp_path / "data", store.url).create(store, project, name, [], **kw)  # type: ignore[arg-type]


def test_creation_refuses_bad_names_versions_and_tags(store: ObjectStore, tmp_path: Path) -> None:
    for kw in ({"version": "1 0"}, {"version": ""}, {"tags": ["a\tb"]}, {"tags": [""]}):
        with pytest.raises(UsageError):
            _draft(store, tmp_path, **kw)
    for project, name in (("b", "d\n"), ("", "d"), ("b", "")):
        with pytest.raises(UsageError):
            _draft(store, tmp_path, project, name)
    assert registry.list_states(store) == []


def test_next_version_after_a_non_ascii_digit(store: ObjectStore, tmp_path: Path) -> None:
    _draft(store, tmp_path, version="1.²")
    assert _draft(store, tmp_path).version == "1.².1"


def test_resolve_on_a_real_store(store: ObjectStore, tmp_path: Path) -> None:
    st = _draft(store, tmp_path, version="1.0", tags=["t"])
    assert registry.resolve(store, "b/d@1.0", require_final=False).id == st.id
    assert registry.resolve(store, st.id[:6], require_final=False).id == st.id
    upper = [u for u in (st.id[:6].upper(), st.id.upper()) if u != u.lower()]  # all digits: no upper case
    for bad in ("b/d@", "b/d\n", " b/d", *upper):
        with pytest.raises(UsageError):
            registry.resolve(store, bad, require_final=False)
    with pytest.raises(UsageError):
        registry.resolve(store, "tag:t", project="a//b")
    for missing in ("b/d@2.0", "b/e", "0000" if not st.id.startswith("0000") else "ffff"):
        with pytest.raises(NotFoundError):
            registry.resolve(store, missing, require_final=False)


def test_list_states_takes_exactly_state_id_and_warns_once(
    store: ObjectStore, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    st = _draft(store, tmp_path)
    store.put(f"state/sub/{st.id}", st.encode())  # not a version's key: ignored, not listed twice
    store.put(f"state/{st.id}.bak", st.encode())
    bad = "e" * 32
    store.put(f"state/{bad}", b"\x93\x01\x02")  # an array, not a map
    caplog.set_level(logging.WARNING, logger="fsmount.commit.registry")
    for _ in range(3):
        assert [s.id for s in registry.list_states(store)] == [st.id]
    warned = [r.getMessage() for r in caplog.records if f"state/{bad}" in r.getMessage()]
    assert len(warned) == 1, warned
    with pytest.raises(FormatError, match=f"state/{bad}"):
        registry.list_states(store, strict=True)
    with pytest.raises(FormatError, match=f"state/{bad}"):
        registry.resolve(store, bad, require_final=False)
    with pytest.raises(NotFoundError):
        registry.resolve(store, "eeee", require_final=False)  # the skipped state is not found by prefix


def test_a_state_naming_another_version_is_a_format_error(store: ObjectStore, tmp_path: Path) -> None:
    st = _draft(store, tmp_path)
    other = "f" * 32
    store.put(f"state/{other}", st.encode())
    with pytest.raises(FormatError, match="names another version"):
        registry.read_state(store, other)
    assert [s.id for s in registry.list_states(store)] == [st.id]
