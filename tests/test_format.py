"""The object format: round trips, hostile input rejected, merges (later wins) and diffs."""

from __future__ import annotations

import msgpack
import pytest

from fsmount.errors import FormatError
from fsmount.format.hashing import digest
from fsmount.format.objects import (
    EMPTY_TREE_HASH,
    FORMAT,
    DirEntry,
    FileEntry,
    SymlinkEntry,
    Tree,
    decode_file_entry,
    decode_tree,
    encode_file_entry,
    encode_tree,
    file_entry_from_json,
    file_entry_to_json,
    tree_object,
)
from fsmount.format.records import VersionRecord
from fsmount.format.tree_edit import TreeEditor, diff_trees, lookup, walk_tree

ORIGIN = "0" * 32


def f(name: str, content: bytes, mode: int = 0o644) -> FileEntry:
    h = digest(content)
    return FileEntry(name, mode, 1, len(content), h, 4096, (h,) if content else (), ORIGIN)


class MemTrees:
    """A dict-backed tree store for editor tests."""

    def __init__(self) -> None:
        self.objs: dict[bytes, bytes] = {}

    def load(self, h: bytes) -> Tree:
        return decode_tree(self.objs[h]) if h != EMPTY_TREE_HASH else Tree([])

    def write(self, h: bytes, data: bytes) -> None:
        self.objs[h] = data

    def build(self, files: dict[str, bytes]) -> bytes:
        ed = TreeEditor(self.load)
        for path, content in files.items():
            ed.put(path, f(path.rsplit("/", 1)[-1], content))
        return ed.write(self.write)[0]

    def contents(self, root: bytes) -> dict[str, bytes]:
        return {p: e.sha256 for p, e in walk_tree(self.load, root) if isinstance(e, FileEntry)}


def test_tree_round_trip_is_canonical() -> None:
    entries = [
        f("b", b"2"),
        SymlinkEntry("c", 0o777, 5, "b", ORIGIN),
        DirEntry("a", 0o755, 3, digest(b"x"), 2, 10),
        FileEntry(
            "big", 0o600, 7, 10, digest(b"q"), 4, (digest(b"1"), (digest(b"2"), 4, 4), digest(b"3")), ORIGIN
        ),
    ]
    data = encode_tree(entries)
    assert encode_tree(reversed(entries)) == data  # order-independent, so equal trees hash equal
    back = decode_tree(data)
    assert [e.name for e in back.entries] == ["a", "b", "big", "c"]
    big = back.get("big")
    assert isinstance(big, FileEntry)
    assert [(o, ln, fo) for _, o, ln, fo in big.spans()] == [(0, 4, 0), (4, 4, 4), (0, 2, 8)]


@pytest.mark.parametrize("name", ["..", ".", "a/b", "nul\0", "", "x" * 300])
def test_hostile_names_are_rejected(name: str) -> None:
    raw = msgpack.packb(
        {
            "format": FORMAT,
            "type": "tree",
            "entries": [[name, 0, 0o644, 0, 0, digest(b""), 4096, [], bytes(16)]],
        }
    )
    with pytest.raises(FormatError):
        decode_tree(raw)


def test_newer_format_is_rejected_with_a_clear_message() -> None:
    raw = msgpack.packb({"format": FORMAT + 1, "type": "tree", "entries": []})
    with pytest.raises(FormatError, match="newer fsmount"):
        decode_tree(raw)


def test_blocks_must_add_up_to_size() -> None:
    raw = msgpack.packb(
        {
            "format": FORMAT,
            "type": "tree",
            "entries": [["f", 0, 0o644, 0, 100, digest(b""), 40, [digest(b"a")], bytes(16)]],
        }
    )
    with pytest.raises(FormatError, match="add up"):
        decode_tree(raw)


def test_garbage_is_a_format_error() -> None:
    with pytest.raises(FormatError):
        decode_tree(b"\xc1not msgpack")
    with pytest.raises(FormatError):
        VersionRecord.decode(msgpack.packb({"format": FORMAT, "type": "version"}))


def test_merge_later_parent_wins_and_union_is_kept() -> None:
    m = MemTrees()
    p1 = m.build({"a/x": b"p1", "a/only1": b"1", "shared": b"p1", "d/deep/f": b"p1"})
    p2 = m.build({"a/x": b"p2", "only2": b"2", "d/deep/g": b"p2"})
    ed = TreeEditor(m.load, p1)
    ed.overlay(p2)
    merged = ed.write(m.write)[0]
    got = m.contents(merged)
    assert got == {
        "a/x": digest(b"p2"),
        "a/only1": digest(b"1"),
        "shared": digest(b"p1"),
        "only2": digest(b"2"),
        "d/deep/f": digest(b"p1"),
        "d/deep/g": digest(b"p2"),
    }


def test_file_in_later_parent_replaces_directory() -> None:
    m = MemTrees()
    p1 = m.build({"x/inside": b"1"})
    p2 = m.build({"x": b"file"})
    ed = TreeEditor(m.load, p1)
    ed.overlay(p2)
    assert m.contents(ed.write(m.write)[0]) == {"x": digest(b"file")}


def test_unchanged_subtrees_are_shared_not_rewritten() -> None:
    m = MemTrees()
    root = m.build({f"d{i}/f{j}": bytes([i, j]) for i in range(10) for j in range(10)})
    before = set(m.objs)
    ed = TreeEditor(m.load, root)
    ed.put("d3/f3", f("f3", b"changed"))
    new_root, stats = ed.write(m.write)
    new = set(m.objs) - before
    assert len(new) == 2  # the root and d3 only
    assert stats.files == 100
    old_d4, new_d4 = lookup(m.load, root, "d4"), lookup(m.load, new_root, "d4")
    assert isinstance(old_d4, DirEntry) and isinstance(new_d4, DirEntry) and old_d4.tree == new_d4.tree


def test_diff_reports_added_modified_removed() -> None:
    m = MemTrees()
    a = m.build({"keep": b"k", "mod": b"1", "gone/x": b"x", "dir/y": b"y"})
    b = m.build({"keep": b"k", "mod": b"2", "new": b"n", "dir/y": b"y", "dir/z": b"z"})
    changes = {(c.kind, c.path) for c in diff_trees(m.load, a, b)}
    assert changes == {("modified", "mod"), ("removed", "gone/x"), ("added", "new"), ("added", "dir/z")}
    assert list(diff_trees(m.load, a, a)) == []


def test_remove_matching_globs() -> None:
    m = MemTrees()
    root = m.build({"img/a.jpg": b"1", "img/b.png": b"2", "c.jpg": b"3", "txt/d": b"4"})
    ed = TreeEditor(m.load, root)
    assert sorted(ed.remove_matching("*.jpg")) == ["c.jpg", "img/a.jpg"]
    assert ed.remove_matching("txt") == ["txt"]
    assert ed.remove_matching("nothing*") == []
    assert set(m.contents(ed.write(m.write)[0])) == {"img/b.png"}


def test_empty_tree_hash_is_the_hash_of_its_encoding() -> None:
    h, data = tree_object([])
    assert h == EMPTY_TREE_HASH == digest(data)


@pytest.mark.parametrize(
    "entry",
    [
        ["f", 0, 0o644, 0, 1, digest(b"x"), 4096, [digest(b"x")], "not-bytes"],
        ["f", 0, 0o644, 0, 1, digest(b"x"), 4096, 7, bytes(16)],
        ["l", 2, 0o777, 0, "target", 12],
        ["d", 1, 0o755, 0, "nothash", 0, 0],
    ],
)
def test_type_confused_entries_are_format_errors(entry: list[object]) -> None:
    with pytest.raises(FormatError):
        decode_tree(msgpack.packb({"format": FORMAT, "type": "tree", "entries": [entry]}))


def test_missing_format_number_is_malformed_not_newer() -> None:
    with pytest.raises(FormatError, match="no valid format number"):
        decode_tree(msgpack.packb({"type": "tree", "entries": []}))


def test_unsorted_or_duplicate_entries_are_rejected() -> None:
    a, b = _encode_entry_raw("a"), _encode_entry_raw("b")
    for entries in ([b, a], [a, a]):
        with pytest.raises(FormatError, match="not sorted or duplicated"):
            decode_tree(msgpack.packb({"format": FORMAT, "type": "tree", "entries": entries}))


def _encode_entry_raw(name: str) -> list[object]:
    return [name, 2, 0o777, 0, "target", bytes(16)]


def test_single_block_files_share_their_hash_object() -> None:
    content = b"x" * 100
    t = decode_tree(encode_tree([f("a", content), f("b", b"y")]))
    e = t.get("a")
    assert isinstance(e, FileEntry) and e.blocks[0] is e.sha256
    assert e.origin is t.get("b").origin  # type: ignore[union-attr]


def test_tree_lookup_bisects_without_a_name_index() -> None:
    names = ["A", "a", "b", "bb", "c", "é", "日本"]
    t = decode_tree(encode_tree([f(n, n.encode()) for n in reversed(names)]))
    for i, n in enumerate(names):
        assert t.index(n) == i and t.get(n) is t.entries[i]
    for miss in ("", "0", "B", "ba", "d", "z", "日"):
        assert t.index(miss) is None and t.get(miss) is None
    assert Tree([]).get("a") is None
    assert not hasattr(t, "__dict__") and "_index" not in Tree.__slots__  # nothing kept per tree


MULTI = FileEntry("big", 0o600, -7, 10, digest(b"q"), 4, (digest(b"1"), (digest(b"2"), 4, 4), digest(b"3")),
                  "0123456789abcdef0123456789abcdef")


@pytest.mark.parametrize("e", [MULTI, f("one", b"x" * 10), f("empty", b"")])
def test_file_entry_codecs_round_trip(e: FileEntry) -> None:
    assert decode_file_entry(encode_file_entry(e)) == e
    assert file_entry_from_json(e.name, file_entry_to_json(e)) == e
    # a file entry alone is exactly its positional array in a tree
    assert msgpack.unpackb(encode_file_entry(e)) == msgpack.unpackb(encode_tree([e]))["entries"][0]


def test_file_entry_in_the_older_overlay_form_still_reads() -> None:
    e = MULTI
    blocks = [b if isinstance(b, bytes) else list(b) for b in e.blocks]
    old = msgpack.packb([e.name, e.mode, e.mtime_ns, e.size, e.sha256, e.block_size, blocks, e.origin],
                        use_bin_type=True)
    assert decode_file_entry(old) == e


def _raw(**change: object) -> list[object]:
    fields = {"name": "f", "kind": 0, "mode": 0o644, "mtime": 0, "size": 1, "sha": digest(b"x"), "bs": 4096,
              "blocks": [digest(b"x")], "origin": bytes(16)}
    fields.update(change)
    return list(fields.values())


@pytest.mark.parametrize(
    "raw",
    [
        _raw(name="../etc"), _raw(name="a/b"), _raw(name=""), _raw(name="x\0y"),
        _raw(mode=True), _raw(mode=-1), _raw(size="1"), _raw(bs=0), _raw(sha=b"short"),
        _raw(size=0), _raw(blocks=[digest(b"x"), digest(b"y")]), _raw(blocks=[[digest(b"y"), 0, 5]]),
        _raw(blocks=[b"short"]), _raw(origin=b"short"), _raw(kind=2), _raw()[:8], "not a list",
    ],
)
def test_file_entry_decoders_refuse_what_a_tree_refuses(raw: object) -> None:
    data = msgpack.packb(raw, use_bin_type=True)
    with pytest.raises(FormatError):
        decode_tree(msgpack.packb({"format": FORMAT, "type": "tree", "entries": [raw]}, use_bin_type=True))
    with pytest.raises(FormatError):
        decode_file_entry(data)


@pytest.mark.parametrize(
    "change",
    [{"sha256": "zz"}, {"size": 5}, {"mode": "644"}, {"origin": "x" * 32}, {"blocks": [["ab", 0, 1]]},
     {"block_size": 0}, {"blocks": None}],
)
def test_journal_entries_are_validated_like_tree_entries(change: dict[str, object]) -> None:
    d = {**file_entry_to_json(MULTI), **change}
    with pytest.raises(FormatError):
        file_entry_from_json("big", d)
    with pytest.raises(FormatError):
        file_entry_from_json("..", file_entry_to_json(MULTI))
    with pytest.raises(FormatError):
        decode_file_entry(b"\xc1")
