"""Hard links in the format (a tree's optional `links` map), the overlay's link groups without FUSE,
and the writable mount's index of known paths by parent."""

from __future__ import annotations

import time
from dataclasses import replace
from pathlib import Path

import msgpack
import pytest

from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.errors import FormatError
from fsmount.format.objects import FileEntry, decode_tree, encode_tree
from fsmount.format.strict import unpack
from fsmount.fs.writable import writable_fs

ORIGIN = "ab" * 16


def _file(name: str, link: bytes | None = None, nlink: int = 1) -> FileEntry:
    sha = bytes(range(32))
    return FileEntry(name, 0o644, 1, 5, sha, 4096, (sha,), ORIGIN, link, nlink)


def test_links_map_round_trips_and_trees_without_links_encode_as_before() -> None:
    group = b"\x07" * 16
    entries = [_file("a", group, 2), _file("b"), _file("c", group, 2)]
    data = encode_tree(entries)
    obj = unpack(data, "tree")
    assert list(obj) == ["format", "type", "entries", "links"]
    assert obj["links"] == {"a": (group, 2), "c": (group, 2)}
    assert decode_tree(data).entries == entries
    plain = [replace(e, link=None, nlink=1) for e in entries]
    assert list(unpack(encode_tree(plain), "tree")) == ["format", "type", "entries"]


def test_a_reader_that_ignores_links_sees_independent_files_with_the_right_content() -> None:
    """What today's readers do with the key (unknown top-level keys are ignored): no misreading."""
    group = b"\x07" * 16
    obj = unpack(encode_tree([_file("a", group, 2), _file("c", group, 2)]), "tree")
    del obj["links"]
    old_view = decode_tree(msgpack.packb(obj, use_bin_type=True))
    assert [(e.name, e.sha256, e.size, e.link) for e in old_view.entries] == [
        ("a", bytes(range(32)), 5, None), ("c", bytes(range(32)), 5, None)]


@pytest.mark.parametrize("links", [
    {"missing": [b"\x01" * 16, 2]},  # not an entry of the tree
    {"a": [b"\x01" * 15, 2]},  # a short group id
    {"a": [b"\x01" * 16, 0]},  # a link count of 0
    {"a": [b"\x01" * 16, True]},  # a bool is not a count
    {"a": [b"\x01" * 16]},  # no count
    {"d": [b"\x01" * 16, 2]},  # a directory cannot be hard-linked
    [1, 2],  # not a map
])
def test_malformed_links_are_a_format_error(links: object) -> None:
    from fsmount.format.objects import EMPTY_TREE_HASH, DirEntry
    obj = unpack(encode_tree([_file("a"), DirEntry("d", 0o755, 1, EMPTY_TREE_HASH, 0, 0)]), "tree")
    obj["links"] = links
    with pytest.raises(FormatError):
        decode_tree(msgpack.packb(obj, use_bin_type=True))


def test_unlink_and_rename_touch_only_the_paths_below(tmp_path: Path, file_store_url: str) -> None:
    from fsmount import Dataset
    from tests.helpers import write_tree
    ws = Workspace(file_store_url)
    ds = Dataset.create("idx", "proj", workspace=ws)
    ds.add_files(write_tree(tmp_path / "src", {"f.txt": b"x"}))
    ds.finalize()
    state = registry.read_state(ws.store, ds.id)
    fs, _ = writable_fs(ws, state, str(tmp_path / "mnt"), str(tmp_path / "ov"), 5)
    try:
        for i in range(200_000):  # what a `find` over a big tree leaves behind
            fs._ino(f"big/d{i // 1000}/f{i}")
        keep = fs._ino("a2/x"), fs._ino("ab"), fs._ino("a/b/c")
        fs._drop("a")
        assert "a/b/c" not in fs._inos and "a/b" not in fs._inos
        assert fs._inos["a2/x"] == keep[0] and fs._inos["ab"] == keep[1]
        fs._moved("big/d3", "moved")
        assert fs._inos.get("moved/f3000") and "big/d3/f3000" not in fs._inos
        t0 = time.perf_counter()
        for i in range(2_000):  # an `rm` of 2,000 files: each unlink looks at its own path only
            fs._drop(f"big/d10/f{10_000 + i % 1000}")
        assert time.perf_counter() - t0 < 1.0  # walking every known path: ~40 s
    finally:
        fs.upper.close()
        ws.close()
