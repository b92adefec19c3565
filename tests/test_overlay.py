"""The overlay without FUSE: upper layer durability, merged view semantics and errors, commit."""

from __future__ import annotations

import errno
import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import msgpack
import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.errors import FormatError, FsError, UsageError
from fsmount.overlay.commit import commit_upper, pending
from fsmount.overlay.merged import MergedView
from fsmount.overlay.nodes import RENAME_EXCHANGE, RENAME_NOREPLACE
from fsmount.overlay.rows import SCHEMA_VERSION
from fsmount.overlay.upper import DIR, Row, UpperLayer
from tests.helpers import count_objects, hash_tree, write_tree

BASE_FILES: dict[str, bytes | str] = {
    "a.txt": b"alpha\n",
    "b.bin": bytes(range(256)) * 64,
    "dir/x.txt": b"x" * 10,
    "dir/sub/y.txt": b"y" * 20,
    "dir/sub/z.txt": b"z" * 30,
    "other/keep.txt": b"keep",
    "link": "->a.txt",
}


def make_version(tmp_path: Path, store_url: str, files: dict[str, bytes | str] | None = None) -> tuple[
        Workspace, Dataset]:
    ws = Workspace(store_url)
    src = write_tree(tmp_path / "src", files or BASE_FILES)
    ds = Dataset.create("data", "proj", workspace=ws)
    ds.add_files(src)
    ds.finalize()
    return ws, ds


def open_view(tmp_path: Path, ws: Workspace, ds: Dataset, name: str = "ov") -> MergedView:
    upper = UpperLayer(tmp_path / name)
    upper.bind(ds.id, ds.record.root)
    return MergedView(upper, ws.reader, upper.root or ds.record.root)


def read_all(v: MergedView, path: str) -> bytes:
    fh = v.open(path)
    try:
        return v.read(fh, 0, 1 << 30)
    finally:
        v.release(fh)


def write_at(v: MergedView, path: str, offset: int, data: bytes, create: bool = False) -> None:
    fh = v.create(path) if create else v.open(path, os.O_RDWR)
    try:
        v.write(fh, offset, data)
    finally:
        v.release(fh)


def view_tree(v: MergedView, path: str = "") -> dict[str, str]:
    """hash_tree's format for the merged view."""
    import hashlib

    out: dict[str, str] = {}
    entries = v.readdir(path)
    for name, n in entries:
        p = f"{path}/{name}" if path else name
        if stat.S_ISDIR(n.st_mode):
            sub = view_tree(v, p)
            out.update(sub)
            if not sub:
                out[p + "/"] = "/"
        elif stat.S_ISLNK(n.st_mode):
            out[p] = "->" + v.readlink(p)
        else:
            out[p] = hashlib.sha256(read_all(v, p)).hexdigest()
    return out


@pytest.fixture
def base(tmp_path: Path, file_store_url: str) -> tuple[Workspace, Dataset]:
    return make_version(tmp_path, file_store_url)


def test_merged_view_shows_the_version_untouched(tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)
    assert view_tree(v) == hash_tree(tmp_path / "src")
    assert v.upper.is_empty()


def test_copy_up_on_first_write_and_metadata_only_rename(
        tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)
    write_at(v, "a.txt", 2, b"PH")
    assert read_all(v, "a.txt") == b"alPHa\n"
    v.rename("b.bin", "dir/moved.bin")
    row = v.upper.rows["dir/moved.bin"]
    assert row.lower is not None and row.data is None  # no bytes copied for a rename
    assert v.upper.rows["b.bin"].kind == 3  # whiteout
    assert read_all(v, "dir/moved.bin") == bytes(range(256)) * 64
    assert not v.exists("b.bin")
    v.chmod("other/keep.txt", 0o600)
    assert v.lookup("other/keep.txt").mode == 0o600
    assert v.upper.rows["other/keep.txt"].data is None


def test_posix_errors(tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)

    def err(fn, *args) -> int:  # type: ignore[no-untyped-def]
        with pytest.raises(FsError) as e:
            fn(*args)
        return e.value.errno

    assert err(v.lookup, "nope") == errno.ENOENT
    assert err(v.lookup, "a.txt/x") == errno.ENOTDIR
    assert err(v.create, "a.txt") == errno.EEXIST
    assert err(v.mkdir, "dir") == errno.EEXIST
    assert err(v.create, "missing/f") == errno.ENOENT
    assert err(v.unlink, "dir") == errno.EISDIR
    assert err(v.rmdir, "a.txt") == errno.ENOTDIR
    assert err(v.rmdir, "dir") == errno.ENOTEMPTY
    assert err(v.rename, "dir", "dir/sub/in") == errno.EINVAL
    assert err(v.rename, "dir", "a.txt") == errno.ENOTDIR
    assert err(v.rename, "a.txt", "dir") == errno.EISDIR
    assert err(v.rename, "other", "dir") == errno.ENOTEMPTY
    assert err(v.rename, "a.txt", "link", RENAME_NOREPLACE) == errno.EEXIST
    assert err(v.rename, "a.txt", "link", RENAME_EXCHANGE) == errno.EINVAL
    assert err(v.link, "dir", "hard") == errno.EPERM  # hard links to directories: never
    assert err(v.link, "a.txt", "link") == errno.EEXIST
    assert err(v.open, "dir") == errno.EISDIR
    assert err(v.readlink, "a.txt") == errno.EINVAL
    assert v.upper.is_empty()


def test_directory_deleted_and_made_again_shows_none_of_its_old_entries(
        tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)
    for p in ("dir/sub/y.txt", "dir/sub/z.txt"):
        v.unlink(p)
    v.rmdir("dir/sub")
    v.mkdir("dir/sub")
    assert v.readdir("dir/sub") == []
    write_at(v, "dir/sub/new.txt", 0, b"new", create=True)
    assert [n for n, _ in v.readdir("dir/sub")] == ["new.txt"]


def test_renamed_directory_keeps_lower_contents_without_copying(
        tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)
    write_at(v, "dir/sub/y.txt", 0, b"Y")
    v.rename("dir", "renamed")
    assert not v.exists("dir")
    assert read_all(v, "renamed/sub/y.txt") == b"Y" + b"y" * 19
    assert read_all(v, "renamed/sub/z.txt") == b"z" * 30
    v.rename("renamed/sub", "other/sub2")  # nested rename out of a renamed dir
    v.unlink("other/sub2/z.txt")
    assert sorted(n for n, _ in v.readdir("other/sub2")) == ["y.txt"]
    # a second rename onto an empty directory replaces it
    v.mkdir("empty")
    v.rename("other/sub2", "empty")
    assert [n for n, _ in v.readdir("empty")] == ["y.txt"]
    assert not v.exists("other/sub2")


def test_upper_survives_kill_9(tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    """A child process writes through the merged view and is SIGKILLed; every returned change is there."""
    ws, ds = base
    upper = UpperLayer(tmp_path / "ov")
    upper.bind(ds.id, ds.record.root)
    upper.close()
    ws.close()  # the child uses the same cache
    script = f"""
import os, sys, signal
from fsmount.api.workspace import Workspace
from fsmount.overlay.upper import UpperLayer
from fsmount.overlay.merged import MergedView
ws = Workspace({ws.store_url!r})
up = UpperLayer({str(tmp_path / 'ov')!r})
v = MergedView(up, ws.reader, up.root)
fh = v.open("a.txt", os.O_RDWR)
v.write(fh, 0, b"ALPHA")
fh2 = v.create("new.txt")
v.write(fh2, 0, b"n" * 100000)
v.mkdir("newdir")
v.rename("dir", "newdir/dir")
v.unlink("other/keep.txt")
os.kill(os.getpid(), signal.SIGKILL)
"""
    proc = subprocess.run([sys.executable, "-c", script], cwd=Path(__file__).parent.parent)
    assert proc.returncode == -9
    v = open_view(tmp_path, ws, ds)
    assert read_all(v, "a.txt") == b"ALPHA\n"
    assert read_all(v, "new.txt") == b"n" * 100000
    assert read_all(v, "newdir/dir/sub/z.txt") == b"z" * 30
    assert not v.exists("other/keep.txt") and not v.exists("dir")


def test_overlay_on_another_version_is_refused(tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    _, ds = base
    upper = UpperLayer(tmp_path / "ov")
    upper.bind(ds.id, ds.record.root)
    with pytest.raises(UsageError, match="in use by another"):
        UpperLayer(tmp_path / "ov")
    upper.bind("0" * 32, ds.record.root)  # an empty overlay just moves
    assert upper.base == "0" * 32
    upper.put(Row("x", DIR, 0o755, 0))
    with pytest.raises(UsageError, match="stands on version"):
        upper.bind(ds.id, ds.record.root)


def test_upper_layer_refuses_a_damaged_or_hostile_lower_entry(tmp_path: Path,
                                                              base: tuple[Workspace, Dataset]) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)
    v.rename("b.bin", "moved.bin")  # a row that references the lower FileEntry: no bytes copied
    entry = v.upper.rows["moved.bin"].lower
    assert entry is not None
    v.upper.close()
    db = sqlite3.connect(tmp_path / "ov" / "upper.db", isolation_level=None)

    def store_lower(raw: list[object]) -> None:
        db.execute("UPDATE entries SET lower = ? WHERE path = 'moved.bin'", (msgpack.packb(raw),))

    stored = db.execute("SELECT lower FROM entries WHERE path = 'moved.bin'").fetchone()[0]
    good = list(msgpack.unpackb(stored))
    assert good[0] == "b.bin" and len(good) == 9  # the entry's own tree form
    for i, hostile in [(0, "../../etc/passwd"), (0, "a/b"), (4, entry.block_size + 1), (4, 0), (2, True),
                       (5, b"short"), (7, [b"\0" * 31]), (8, b"short")]:
        store_lower([*good[:i], hostile, *good[i + 1:]])
        with pytest.raises(FormatError, match=r"damaged entry 'moved\.bin'"):
            UpperLayer(tmp_path / "ov")
    # A row as older overlays wrote it (8 elements, origin in hex) still loads, to the same entry.
    blocks = [b if isinstance(b, bytes) else list(b) for b in entry.blocks]
    store_lower([entry.name, entry.mode, entry.mtime_ns, entry.size, entry.sha256, entry.block_size, blocks,
                 entry.origin])
    v = MergedView(UpperLayer(tmp_path / "ov"), ws.reader, ds.record.root)
    assert v.upper.rows["moved.bin"].lower == entry
    assert read_all(v, "moved.bin") == BASE_FILES["b.bin"]
    v.upper.close()


def test_overlay_of_a_newer_schema_is_refused(tmp_path: Path, base: tuple[Workspace, Dataset]) -> None:
    _, ds = base
    upper = UpperLayer(tmp_path / "ov")
    upper.bind(ds.id, ds.record.root)
    assert upper.meta["schema"] == str(SCHEMA_VERSION)
    upper.set_meta(schema=str(SCHEMA_VERSION + 1))
    upper.close()
    with pytest.raises(UsageError, match="newer fsmount"):
        UpperLayer(tmp_path / "ov")
    db = sqlite3.connect(tmp_path / "ov" / "upper.db", isolation_level=None)
    db.execute("DELETE FROM meta WHERE key = 'schema'")  # overlays made before the schema was written
    upper = UpperLayer(tmp_path / "ov")
    assert upper.meta["schema"] == str(SCHEMA_VERSION) and upper.base == ds.id
    upper.close()


def test_commit_round_trip(tmp_path: Path, store_url: str) -> None:
    ws, ds = make_version(tmp_path, store_url)
    v = open_view(tmp_path, ws, ds)
    write_at(v, "a.txt", 6, b"more\n")
    v.mkdir("dir/new")
    write_at(v, "dir/new/deep.txt", 0, b"deep", create=True)
    v.rename("dir/sub", "moved")
    v.unlink("moved/y.txt")
    v.chmod("other/keep.txt", 0o600)
    v.symlink("dir/ln", "../a.txt")
    v.unlink("link")
    v.mkdir("emptydir")
    expected = view_tree(v)
    p = pending(v.upper, ws, ds.record.root)
    assert "a.txt" in p.modified and "dir/new/deep.txt" in p.added and "link" in p.removed
    result = commit_upper(v.upper, ws, message="edit")
    rec = result.record
    assert rec is not None and rec.parents == (ds.id,)
    assert v.upper.is_empty() and v.upper.base == rec.id
    child = Dataset.get(rec.id, workspace=ws)
    assert child.state == "final"
    assert hash_tree(Path(child.get_local_copy())) == expected
    mode = next(e for p, e in child.iter_entries() if p == "other/keep.txt").mode
    assert mode == 0o600
    # the same view now stands on the new version with an empty overlay
    v.rebase(rec.root, 0)
    assert view_tree(v) == expected
    assert commit_upper(v.upper, ws).record is None  # nothing to commit


def test_one_edit_in_1000_files_uploads_one_block_and_a_few_trees(
        tmp_path: Path, file_store_url: str) -> None:
    files: dict[str, bytes | str] = {
        f"d{i}/f{j:03}.bin": os.urandom(16384) for i in range(10) for j in range(100)}
    ws, ds = make_version(tmp_path, file_store_url, files)
    store = Path(file_store_url.removeprefix("file://"))
    before = count_objects(store)
    v = open_view(tmp_path, ws, ds)
    write_at(v, "d3/f050.bin", 100, b"changed")
    result = commit_upper(v.upper, ws)
    after = count_objects(store)
    assert result.stats.blocks_uploaded == 1
    assert after[0] - before[0] == 3  # the block, d3's tree, the root
    assert after[1] - before[1] < 16384 + 16384  # the block plus two tree objects (d3: 100 entries)


def test_commit_interrupted_after_final_finishes_on_retry(tmp_path: Path, base: tuple[Workspace, Dataset],
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)
    write_at(v, "c.txt", 0, b"c", create=True)
    import fsmount.overlay.upper as upper_mod

    def crash(self, *a):  # type: ignore[no-untyped-def]
        raise KeyboardInterrupt("simulated crash after the state flip")

    monkeypatch.setattr(upper_mod.UpperLayer, "reset", crash)
    with pytest.raises(KeyboardInterrupt):
        commit_upper(v.upper, ws)
    monkeypatch.undo()
    draft = v.upper.committing
    assert draft is not None and not v.upper.is_empty()
    result = commit_upper(v.upper, ws)
    assert result.resumed and result.record is not None and result.record.id == draft
    assert v.upper.is_empty() and v.upper.base == draft
    finals = [d for d in Dataset.list_versions(workspace=ws) if d.is_final]
    assert len(finals) == 2


def test_commit_failing_before_final_is_resumed(tmp_path: Path, base: tuple[Workspace, Dataset],
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    ws, ds = base
    v = open_view(tmp_path, ws, ds)
    write_at(v, "c.txt", 0, b"c" * 5000, create=True)
    import fsmount.overlay.commit as commit_mod
    from fsmount.errors import StoreUnreachable

    def boom(*a, **k):  # type: ignore[no-untyped-def]
        raise StoreUnreachable("store down")

    monkeypatch.setattr(commit_mod, "finalize", boom)
    with pytest.raises(StoreUnreachable):
        commit_upper(v.upper, ws)
    monkeypatch.undo()
    draft = v.upper.committing
    assert Dataset.get(draft, workspace=ws, only_final=False).state == "draft"
    assert not v.upper.is_empty()
    result = commit_upper(v.upper, ws)
    assert result.record is not None and result.record.id == draft and result.resumed
    assert hash_tree(Path(Dataset.get(draft, workspace=ws).get_local_copy()))["c.txt"]
