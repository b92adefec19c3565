"""Overlay commits at the store: differential uploads, and two overlays committing on one parent."""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.overlay.commit import commit_upper
from fsmount.overlay.commit import pending as pending_changes
from fsmount.overlay.merged import MergedView
from fsmount.overlay.upper import UpperLayer
from tests.helpers import count_objects, hash_tree, write_tree


def _view(folder: Path, ws: Workspace, ds: Dataset) -> MergedView:
    upper = UpperLayer(folder)
    upper.bind(ds.id, ds.record.root)
    return MergedView(upper, ws.reader, ds.record.root)


def test_appending_1mib_to_a_256mib_file_uploads_one_block(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    data = tmp_path / "data"
    data.mkdir()
    (data / "big.bin").write_bytes(os.urandom(256 * 2**20))
    ds = Dataset.create("big", "proj", workspace=ws)
    ds.add_files(data)
    ds.finalize()
    before = count_objects(store)
    v = _view(tmp_path / "ov", ws, ds)
    fh = v.open("big.bin", os.O_WRONLY | os.O_APPEND)
    v.write(fh, 0, os.urandom(2**20))
    v.release(fh)
    result = commit_upper(v.upper, ws)
    after = count_objects(store)
    assert result.stats.bytes_uploaded == 2**20  # the appended MiB is the only new block
    assert result.stats.blocks_deduplicated == 64
    assert after[0] - before[0] == 2  # that block and the root tree
    assert after[1] - before[1] < 2**20 + 4096


def test_two_overlays_commit_children_of_one_parent(tmp_path: Path, store_url: str) -> None:
    ws = Workspace(store_url)
    ds = Dataset.create("two", "proj", workspace=ws)
    ds.add_files(write_tree(tmp_path / "src", {"a.txt": b"a", "d/b.txt": b"b"}))
    ds.finalize()
    views = [_view(tmp_path / f"ov{i}", ws, ds) for i in range(2)]
    for i, v in enumerate(views):
        fh = v.create(f"d/from{i}.txt")
        v.write(fh, 0, f"machine {i}\n".encode())
        v.release(fh)
    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(lambda iv: commit_upper(iv[1].upper, ws, tags=[f"m{iv[0]}", "both"]),
                                enumerate(views)))
    ids = [r.record.id for r in results if r.record is not None]
    assert len(set(ids)) == 2
    for i, vid in enumerate(ids):
        child = Dataset.get(vid, workspace=ws)
        assert child.parents == [ds.id] and child.is_final
        assert set(child.tags) == {f"m{i}", "both"}
        files = hash_tree(Path(child.get_local_copy()))
        assert f"d/from{i}.txt" in files and f"d/from{1 - i}.txt" not in files
    assert len({d.id for d in Dataset.list_versions(workspace=ws) if d.is_final}) == 3


def test_diff_says_what_commit_will_do_for_identical_rewrites(tmp_path: Path, store_url: str) -> None:
    """Files rewritten with the same bytes, a symlink remade with its target: not pending, not committed."""
    ws = Workspace(store_url)
    ds = Dataset.create("same", "proj", workspace=ws)
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha", "b.txt": b"beta", "c.txt": b"gamma"})
    os.symlink("a.txt", src / "link")
    ds.add_files(src)
    ds.finalize()
    v = _view(tmp_path / "ov", ws, ds)
    for path, data in (("a.txt", b"alpha"), ("b.txt", b"BETA!"), ("c.txt", b"gamm")):
        fh = v.open(path, os.O_WRONLY | os.O_TRUNC)
        v.write(fh, 0, data)
        v.release(fh)
    v.unlink("link")
    v.symlink("link", "a.txt")
    fh = v.create("new.txt")
    v.release(fh)
    pending = pending_changes(v.upper, ws, ds.record.root)
    assert (pending.added, pending.modified, pending.removed) == (["new.txt"], ["b.txt", "c.txt"], [])
    record = commit_upper(v.upper, ws).record
    assert record is not None
    child = Dataset.get(dataset_id=record.id, workspace=ws)
    assert (child.list_added_files(), child.list_modified_files(), child.list_removed_files()) == (
        pending.added, pending.modified, pending.removed)
