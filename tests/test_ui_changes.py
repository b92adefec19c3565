"""The UI's lazy diff (fsmount/ui/changes.py) agrees with format.tree_edit.diff_trees on random trees."""

from __future__ import annotations

import hashlib

from hypothesis import given, settings
from hypothesis import strategies as st

from fsmount.format.objects import EMPTY_TREE_BYTES, EMPTY_TREE_HASH, FileEntry, Tree, decode_tree
from fsmount.format.tree_edit import TreeEditor, diff_trees
from fsmount.ui import changes

ORIGIN = "0" * 32
names = st.sampled_from(["a", "b", "c", "d"])
paths = st.lists(names, min_size=1, max_size=4).map("/".join)
contents = st.sampled_from([b"x", b"y", b"z"])


class Objects:
    """Trees by hash, in memory: what the editor writes and the diff reads."""

    def __init__(self) -> None:
        self.data = {EMPTY_TREE_HASH: EMPTY_TREE_BYTES}

    def load(self, h: bytes) -> Tree:
        return decode_tree(self.data[h])

    def put(self, h: bytes, data: bytes) -> None:
        self.data[h] = data

    def tree(self, files: dict[str, bytes]) -> bytes:
        ed = TreeEditor(self.load)
        for path, data in files.items():
            if ed.get(path) is not None:
                continue
            try:
                digest = hashlib.sha256(data).digest()
                ed.put(path, FileEntry(path.rsplit("/", 1)[-1], 0o644, 0, len(data), digest, 4096, (digest,),
                                       ORIGIN))
            except Exception:  # a path under a file already placed: skip it, as a folder cannot be both
                continue
        return ed.write(self.put)[0]


@settings(max_examples=200, deadline=None)
@given(st.dictionaries(paths, contents, max_size=12), st.dictionaries(paths, contents, max_size=12),
       st.integers(0, 6), st.integers(1, 5))
def test_counts_and_pages_match_the_full_diff(old: dict[str, bytes], new: dict[str, bytes],
                                              start: int, limit: int) -> None:
    objs = Objects()
    a, b = objs.tree(old), objs.tree(new)
    full = list(diff_trees(objs.load, a, b))
    c = changes.count(objs.load, a, b)
    for kind in changes.KINDS:
        want = [x.path for x in full if x.kind == kind]
        assert c.of(kind) == len(want), kind
        got = [x.path for x in changes.page(objs.load, a, b, kind, start, limit)]
        assert got == want[start:start + limit], kind
    per_dir = changes.dir_counts(objs.load, a, b)
    assert per_dir.total == c
    for name, _, sub in per_dir.children:
        inside = [x for x in full if x.path == name or x.path.startswith(name + "/")]
        assert sub.total == len(inside), name
