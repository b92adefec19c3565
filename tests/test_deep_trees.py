"""Deep trees: a real 1,100-level folder and a hostile 3,000-level tree, through the CLI and a mount.

Python's recursion limit is 1,000 frames: every walk (sync's scan, ls, diff, verify, get, the mount)
must be iterative. A path longer than PATH_MAX cannot be made with plain path strings: `get` refuses
it with one line, and the mount serves it (read here with openat-style dir fds).
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import pytest

from fsmount.api.workspace import Workspace
from fsmount.format.hashing import object_key, record_key
from fsmount.format.objects import EMPTY_TREE_HASH, DirEntry, SymlinkEntry, tree_object
from fsmount.format.records import VersionRecord
from fsmount.format.tree_edit import TreeEditor, diff_trees, lookup, walk_tree
from fsmount.overlay.merged import MergedView
from fsmount.overlay.upper import UpperLayer
from fsmount.store import open_store
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, run_json

LEGIT = 1100  # deeper than Python's default recursion limit (1000)
HOSTILE = 3000  # and the path is longer than PATH_MAX (4096) too
ORIGIN = "ab" * 16


def _clean(proc: object) -> None:
    err = getattr(proc, "stderr", "")
    assert "Traceback" not in err and "RecursionError" not in err and "internal error" not in err, err


def _deep_folder(root: Path, leaf: bytes) -> str:
    """`root/d/d/.../d/leaf.txt`, LEGIT folders deep (each made with mkdir: os.makedirs recurses)."""
    p = root
    p.mkdir()
    for _ in range(LEGIT):
        p = p / "d"
        p.mkdir()
    (p / "leaf.txt").write_bytes(leaf)
    (root / "top.txt").write_bytes(b"top\n")
    return "/".join(["d"] * LEGIT + ["leaf.txt"])


def test_a_real_1100_level_folder(file_store_url: str, tmp_path: Path, require_fuse: None,
                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMOUNT_STORE", file_store_url)
    src = tmp_path / "src"
    leaf = _deep_folder(src, b"deep\n")
    first = run_json("sync", "--folder", str(src), "--project", "p", "--name", "deep")
    assert sorted(first["paths"]["added"]) == sorted([leaf, "top.txt"])
    v1 = first["id"]
    listed = run_cli("ls", v1, "-r")
    _clean(listed)
    assert leaf in listed.stdout.split()
    (src / leaf).write_bytes(b"deeper\n")
    v2 = run_json("sync", "--folder", str(src), "--project", "p", "--name", "deep")["id"]
    diff = run_cli("diff", v1, v2)
    _clean(diff)
    assert f"M {leaf}" in diff.stdout
    _clean(run_cli("verify", v2))
    copy = tmp_path / "copy"
    _clean(run_cli("get", v2, "--copy", str(copy), "-q"))
    assert (copy / leaf).read_bytes() == b"deeper\n"
    shared = Path(run_cli("get", v2, "-q").stdout.strip())
    assert (shared / leaf).read_bytes() == b"deeper\n"
    run_cli("get", v2, "--copy", str(copy), "--overwrite", "-q")  # removes the deep old copy first
    assert (copy / leaf).read_bytes() == b"deeper\n"
    with cli_mount(v2, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        st = os.stat(mnt / leaf)
        assert st.st_size == len(b"deeper\n")
        assert (mnt / leaf).read_bytes() == b"deeper\n"


def _hostile(store_url: str, tmp_path: Path) -> tuple[str, str]:
    """A final version whose record points at a HOSTILE-level chain of directories ending in a symlink.

    Made like an attacker with write access would: trees encoded and put in the store, and the
    version's record rewritten to point at the new root. Returns (version id, deepest path).
    """
    src = tmp_path / "small"
    src.mkdir()
    (src / "a.txt").write_bytes(b"a")
    vid = run_json("sync", "--folder", str(src), "--project", "p", "--name", "hostile")["id"]
    store = open_store(store_url)
    h, data = tree_object([SymlinkEntry("s", 0o777, 0, "target", vid)])
    store.put(f"objects/{h.hex()[:2]}/{h.hex()}", data)
    for _ in range(HOSTILE):
        h, data = tree_object([DirEntry("d", 0o755, 0, h, 1, 0)])
        store.put(f"objects/{h.hex()[:2]}/{h.hex()}", data)
    rec = VersionRecord.decode(store.get(record_key(vid)))
    hostile = dataclasses.replace(rec, root=h, files=1, nbytes=0)
    store.delete(record_key(vid))
    store.put(record_key(vid), hostile.encode())
    assert h != EMPTY_TREE_HASH
    return vid, "/".join(["d"] * HOSTILE + ["s"])


def test_a_hostile_3000_level_tree(file_store_url: str, tmp_path: Path, require_fuse: None,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMOUNT_STORE", file_store_url)
    monkeypatch.setenv("FSMOUNT_CACHE_DIR", str(tmp_path / "fresh-cache"))  # the real record is not cached
    vid, deepest = _hostile(file_store_url, tmp_path)
    listed = run_cli("ls", vid, "-r")
    _clean(listed)
    assert deepest in listed.stdout.split()
    _clean(run_cli("verify", vid))
    for args in ((), ("--copy", str(tmp_path / "copy"))):
        got = run_cli("get", vid, "-q", *args, check=False)
        _clean(got)  # deeper than PATH_MAX: refused with one line
        assert got.returncode != 0 and "PATH_MAX" in got.stderr and len(got.stderr.splitlines()) == 1
    with cli_mount(vid, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        fd = os.open(mnt, os.O_RDONLY | os.O_DIRECTORY)
        try:
            for _ in range(HOSTILE):  # openat, one level at a time: no path string is ever that long
                nxt = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
                os.close(fd)
                fd = nxt
            assert os.readlink("s", dir_fd=fd) == "target"
        finally:
            os.close(fd)


def test_tree_editing_at_3000_levels(file_store_url: str, tmp_path: Path) -> None:
    """TreeEditor's put / write / overlay / remove_matching / graft and diff_trees / walk_tree / lookup."""
    ws = Workspace(file_store_url, cache_dir=tmp_path / "cache")
    load = ws.reader.tree

    def put(h: bytes, data: bytes) -> None:
        ws.store.put(object_key(h), data)

    deep = "/".join(["d"] * HOSTILE)
    a = TreeEditor(load)
    a.put(f"{deep}/s", SymlinkEntry("s", 0o777, 0, "t", ORIGIN))
    root_a, stats = a.write(put)
    assert stats.files == 1
    b = TreeEditor(load)
    b.put(f"{deep}/u", SymlinkEntry("u", 0o777, 0, "t", ORIGIN))
    root_b, _ = b.write(put)
    merged = TreeEditor(load, root_a)
    merged.overlay(root_b)
    root_m, stats = merged.write(put)
    assert stats.files == 2
    assert lookup(load, root_m, f"{deep}/s") is not None and lookup(load, root_m, f"{deep}/u") is not None
    assert [(c.kind, c.path) for c in diff_trees(load, root_a, root_m)] == [("added", f"{deep}/u")]
    assert sum(1 for _ in walk_tree(load, root_m)) == HOSTILE + 2
    assert merged.remove_matching("u*") == [f"{deep}/u"]
    merged.graft("g", DirEntry("g", 0o755, 0, root_a, 1, 0))
    root_r, stats = merged.write(put)
    assert lookup(load, root_r, f"{deep}/u") is None and lookup(load, root_r, f"g/{deep}/s") is not None
    assert stats.files == 2
    ws.close()


def test_a_writable_view_of_a_3000_level_tree(file_store_url: str, tmp_path: Path,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMOUNT_STORE", file_store_url)
    vid, deepest = _hostile(file_store_url, tmp_path)
    ws = Workspace(file_store_url, cache_dir=tmp_path / "fresh-cache")
    rec = ws.reader.record(vid)
    upper = UpperLayer(tmp_path / "ov")
    upper.bind(vid, rec.root)
    view = MergedView(upper, ws.reader, rec.root)
    assert view.readlink(deepest) == "target"
    parent = deepest.rsplit("/", 1)[0]
    view.mkdir(f"{parent}/new")
    assert sorted(name for name, _ in view.readdir(parent)) == ["new", "s"]
    view.unlink(deepest)
    assert [name for name, _ in view.readdir(parent)] == ["new"]
    upper.close()
    ws.close()
