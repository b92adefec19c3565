"""The dataset lifecycle through the Python API, on both stores: lineage, merges, removals, copies."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.sync import sync
from fsmount.api.workspace import Workspace
from fsmount.errors import NotFoundError, StateError, UsageError
from tests.helpers import expected_hashes, hash_tree, write_tree

BS = 64 * 1024  # small blocks, so files of a few hundred KiB span block boundaries


def big(n: int, seed: int) -> bytes:
    """n random bytes, starting with `seed` so a reader of the test can tell files apart."""
    return bytes([seed]) + os.urandom(n - 1)


@pytest.fixture
def ws(store_url: str) -> Workspace:
    return Workspace(store_url)


def make_version(
    ws: Workspace,
    tmp: Path,
    name: str,
    files: dict[str, bytes | str],
    parents: list[str] = (),
    removes: list[str] = (),
) -> Dataset:
    ds = Dataset.create(name, "proj", parent_datasets=list(parents), block_size=BS, workspace=ws)
    if files:
        src = write_tree(tmp / f"src-{ds.id}", files)
        ds.add_files(src)
    for r in removes:
        ds.remove_files(r)
    ds.finalize()
    return ds


def test_three_generations_two_parents(ws: Workspace, tmp_path: Path) -> None:
    shared = big(300_000, 1)
    a_files = {
        "common.txt": "from a",
        "a/only.bin": shared,
        "img/1.jpg": b"1" * 10,
        "img/2.jpg": b"2",
        "empty/": "",
        "link": "->common.txt",
    }
    b_files = {"common.txt": "from b", "b/only.txt": "b", "img/3.jpg": b"3"}
    a = make_version(ws, tmp_path, "a", a_files)
    b = make_version(ws, tmp_path, "b", b_files)
    c_files = {"c/new.txt": "new in c", "a/only.bin": big(300_000, 2)}
    c = make_version(ws, tmp_path, "c", c_files, parents=[a.id, b.id], removes=["img/2.jpg", "b"])

    expected = expected_hashes({**a_files, **b_files, **c_files})
    del expected["img/2.jpg"], expected["b/only.txt"]
    assert expected["common.txt"] == expected_hashes({"x": "from b"})["x"]  # later parent won

    copy = Path(c.get_local_copy())
    assert hash_tree(copy) == expected
    assert sorted(c.list_files()) == sorted(k for k in expected if not k.endswith("/"))
    assert set(c.list_added_files()) == {"c/new.txt"}
    assert set(c.list_modified_files()) == {"a/only.bin"}
    assert set(c.list_removed_files()) == {"img/2.jpg", "b/only.txt"}
    assert c.lineage() == [c.id, a.id, b.id]
    assert c.verify_dataset_hash() == []
    # get_local_copy again: same path, nothing fetched
    fetched = ws.reader.stats.objects_fetched
    assert c.get_local_copy() == str(copy)
    assert ws.reader.stats.objects_fetched == fetched


def test_get_of_child_downloads_only_new_blocks(ws: Workspace, tmp_path: Path) -> None:
    base = {f"f{i:03}.bin": big(100_000, i) for i in range(20)}
    parent = make_version(ws, tmp_path, "p", base)
    parent.get_local_copy()
    child = make_version(ws, tmp_path, "c", {"f005.bin": big(100_000, 99)}, parents=[parent.id])
    fresh = Workspace(ws.store_url)  # a new process would start with zero counters, same cache
    Dataset.get(dataset_id=child.id, workspace=fresh).get_local_copy()
    assert fresh.reader.stats.objects_fetched == 2  # 100 KB at 64 KiB blocks: 2 new blocks, trees cached
    assert fresh.reader.stats.cache_hits > 0


def test_mutable_copy_and_overwrite(ws: Workspace, tmp_path: Path) -> None:
    ds = make_version(ws, tmp_path, "m", {"x/y.txt": "hello"})
    target = tmp_path / "work"
    ds.get_mutable_local_copy(target)
    (target / "x" / "y.txt").write_text("edited")  # writable
    with pytest.raises(UsageError, match="not empty"):
        ds.get_mutable_local_copy(target)
    assert (target / "x" / "y.txt").read_text() == "edited"  # refused: nothing lost
    ds.get_mutable_local_copy(target, overwrite=True)
    assert (target / "x" / "y.txt").read_text() == "hello"


def test_lifecycle_errors(ws: Workspace, tmp_path: Path) -> None:
    draft = Dataset.create("d", "proj", workspace=ws)
    with pytest.raises(StateError, match="not final"):
        Dataset.create("child", "proj", parent_datasets=[draft.id], workspace=ws)
    with pytest.raises(UsageError, match="no such file"):
        draft.add_files(tmp_path / "missing")
    src = write_tree(tmp_path / "s", {"a": "1"})
    draft.add_files(src)
    draft.finalize()
    with pytest.raises(StateError, match="already final"):
        draft.finalize()
    with pytest.raises(StateError):
        draft.add_files(src)
    with pytest.raises(NotFoundError):
        Dataset.get(ref="proj/nothing", workspace=ws)
    with pytest.raises(UsageError, match="nothing in the dataset matches"):
        Dataset.create("d", "proj", parent_datasets=[draft.id], workspace=ws).remove_files("zzz*")


def test_refs_resolve(ws: Workspace, tmp_path: Path) -> None:
    v1 = make_version(ws, tmp_path, "r", {"a": "1"})
    v2 = make_version(ws, tmp_path, "r", {"a": "2"}, parents=[v1.id])
    v2.add_tags(["best"])
    v1.add_tags(["old"])
    assert Dataset.get(ref="proj/r", workspace=ws).id == v2.id
    assert Dataset.get(ref=f"proj/r@{v1.version}", workspace=ws).id == v1.id
    assert Dataset.get(ref="tag:best", workspace=ws).id == v2.id
    assert Dataset.get(dataset_tags=["old"], workspace=ws).id == v1.id
    assert Dataset.get(ref=v1.id[:10], workspace=ws).id == v1.id
    assert v1.version == "1.0.0" and v2.version == "1.0.1"
    draft = Dataset.create("r", "proj", workspace=ws)
    assert Dataset.get(ref="proj/r", workspace=ws).id == v2.id  # a draft is never the newest final
    with pytest.raises(StateError):
        Dataset.get(ref=draft.id, workspace=ws)


def test_sync_reports_changes_and_builds_lineage(ws: Workspace, tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "data", {"keep": "k", "mod": "1", "gone": "g", "sub/deep": "d"})
    first, res = sync(folder, project="proj", name="s", workspace=ws)
    assert sorted(res.added) == ["gone", "keep", "mod", "sub/deep"] and not res.modified and not res.removed
    (folder / "mod").write_text("2")
    (folder / "gone").unlink()
    (folder / "new").write_text("n")
    second, res = sync(folder, project="proj", name="s", workspace=ws)
    assert (res.added, res.modified, res.removed) == (["new"], ["mod"], ["gone"])
    assert second.parents == [first.id]
    assert hash_tree(Path(second.get_local_copy())) == hash_tree(folder)
    _, res = sync(folder, project="proj", name="s", workspace=ws)
    assert (res.added, res.modified, res.removed) == ([], [], [])


def test_publish_delete_and_gc(ws: Workspace, tmp_path: Path) -> None:
    parent = make_version(ws, tmp_path, "g", {"keep": "k", "drop": big(200_000, 5)})
    child = make_version(ws, tmp_path, "g", {"x": "x"}, parents=[parent.id], removes=["drop"])
    child.publish()
    assert Dataset.get(dataset_id=child.id, workspace=ws).state == "published"
    with pytest.raises(StateError, match="already published"):
        child.publish()
    with pytest.raises(StateError, match="parent of 1"):
        parent.delete()
    from fsmount.api.sync import gc

    assert gc(ws, grace=0)["deleted"] == 0  # everything is reachable
    parent.delete(force=True)
    res = gc(ws, grace=0)
    assert res["deleted"] >= 4  # the 200 KB file's 4 blocks at least
    assert Dataset.get(dataset_id=child.id, workspace=ws).verify_dataset_hash() == []
    assert hash_tree(Path(child.get_local_copy())) == expected_hashes({"keep": "k", "x": "x"})


def test_sync_removes_names_with_glob_characters_exactly(ws: Workspace, tmp_path: Path) -> None:
    folder = write_tree(
        tmp_path / "g", {"img[1].jpg": "bracket", "img1.jpg": "plain", "sub/img1.jpg": "deep"}
    )
    sync(folder, project="proj", name="glob", workspace=ws)
    (folder / "img[1].jpg").unlink()
    second, res = sync(folder, project="proj", name="glob", workspace=ws)
    assert res.removed == ["img[1].jpg"]
    assert sorted(second.list_files()) == ["img1.jpg", "sub/img1.jpg"]


def test_chmod_alone_is_a_modification(ws: Workspace, tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "m", {"run.sh": "echo"})
    sync(folder, project="proj", name="mode", workspace=ws)
    (folder / "run.sh").chmod(0o755)
    second, res = sync(folder, project="proj", name="mode", workspace=ws)
    assert res.modified == ["run.sh"]
    assert os.stat(Path(second.get_mutable_local_copy(tmp_path / "out")) / "run.sh").st_mode & 0o777 == 0o755


def test_non_utf8_file_names_are_refused_clearly(ws: Workspace, tmp_path: Path) -> None:
    folder = tmp_path / "bad"
    folder.mkdir()
    (folder / b"caf\xe9.txt".decode("utf-8", "surrogateescape")).write_text("x")
    ds = Dataset.create("enc", "proj", workspace=ws)
    with pytest.raises(UsageError, match="not valid UTF-8"):
        ds.add_files(folder)


def test_files_staged_after_an_interrupted_finalize_are_not_lost(ws: Workspace, tmp_path: Path) -> None:
    """finalize dies after writing the record, before the state flip; then a file is staged and
    close runs again: the record of the interrupted run must be replaced, not reused."""
    from fsmount.store.faults import FaultyStore, SimulatedCrash

    (tmp_path / "a").write_text("a")
    (tmp_path / "b").write_text("b")
    ds = Dataset.create("late", "proj", workspace=ws)
    ds.add_files(tmp_path / "a")
    flip = ("put_conditional", f"state/{ds.id}")
    doomed = Workspace(FaultyStore(ws.store, crash_on=lambda op, key: (op, key) == flip))
    with pytest.raises(SimulatedCrash):
        Dataset(doomed, ds.refresh()._state).finalize()
    assert ws.store.exists(f"versions/{ds.id}") and ds.refresh().state == "draft"
    ds.add_files(tmp_path / "b")
    ds.finalize()
    assert sorted(ds.list_files()) == ["a", "b"]
