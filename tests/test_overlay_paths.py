"""Paths in the merged view: normalising, and resolving through ancestors that are upper rows,
lower entries, whiteouts or files (without making a node per ancestor)."""

from __future__ import annotations

import errno
from pathlib import Path

import pytest

from fsmount.errors import FsError
from fsmount.overlay.nodes import split
from tests.test_overlay import make_version, open_view


@pytest.mark.parametrize(("raw", "want"), [
    ("a/b", "a/b"), ("/a//b/", "a/b"), ("./a/./b", "a/b"), ("a/.hidden", "a/.hidden"), (".x", ".x"),
    ("a", "a"), ("", ""), ("é/ü", "é/ü"), ("a/" + "x" * 255, "a/" + "x" * 255),
])
def test_split_normalises(raw: str, want: str) -> None:
    assert split(raw) == want


@pytest.mark.parametrize(("raw", "err"), [
    ("a/../b", errno.EINVAL), ("..", errno.EINVAL), ("a/..", errno.EINVAL), ("/..", errno.EINVAL),
    ("x" * 256, errno.ENAMETOOLONG), ("a/" + "é" * 128, errno.ENAMETOOLONG),
])
def test_split_refuses(raw: str, err: int) -> None:
    with pytest.raises(FsError) as e:
        split(raw)
    assert e.value.errno == err


def test_resolving_through_every_kind_of_ancestor(tmp_path: Path, file_store_url: str) -> None:
    ws, ds = make_version(tmp_path, file_store_url)
    v = open_view(tmp_path, ws, ds)
    v.mkdir("up")
    v.mkdir("up/deeper")
    v.release(v.create("up/deeper/f"))
    assert v.lookup("up/deeper/f").kind == 0
    assert v.lookup("dir/sub/y.txt").size == 20  # lower ancestors
    v.release(v.create("dir/sub/new"))  # a lower directory with an upper file
    assert v.lookup("dir/sub/new").size == 0
    for path, err in [("a.txt/x", errno.ENOTDIR), ("up/deeper/f/x", errno.ENOTDIR),
                      ("up/nothing/x", errno.ENOENT), ("nothing/x/y", errno.ENOENT)]:
        with pytest.raises(FsError) as e:
            v.lookup(path)
        assert e.value.errno == err, path
    v.unlink("dir/sub/y.txt")
    v.unlink("dir/sub/z.txt")
    v.unlink("dir/sub/new")
    v.unlink("dir/x.txt")
    v.rmdir("dir/sub")
    v.rmdir("dir")  # a whiteout ancestor hides everything below it
    for path in ("dir/sub/y.txt", "dir/x.txt"):
        assert not v.exists(path)
        with pytest.raises(FsError) as e:
            v.lookup(path)
        assert e.value.errno == errno.ENOENT
    v.upper.close()
    ws.close()
