"""What the Dataset facade promises beyond the lifecycle: diff between versions, the current-draft
pointer, the empty tree in the store, and one tag resolution for REFs and `get`."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.errors import NotFoundError, UsageError
from fsmount.format.hashing import object_key
from fsmount.format.objects import EMPTY_TREE_HASH
from fsmount.overlay.commit import commit_upper
from fsmount.overlay.merged import MergedView
from fsmount.overlay.upper import UpperLayer
from tests.helpers import write_tree


@pytest.fixture
def ws(store_url: str) -> Workspace:
    return Workspace(store_url)


def version(ws: Workspace, tmp: Path, files: dict[str, bytes | str], parents: list[str] = (),
            removes: list[str] = (), tags: list[str] = ()) -> Dataset:
    ds = Dataset.create("d", "proj", parent_datasets=list(parents), dataset_tags=list(tags), workspace=ws)
    if files:
        ds.add_files(write_tree(tmp / f"src-{ds.id}", files))
    for r in removes:
        ds.remove_files(r)
    ds.finalize()
    return ds


def test_diff_between_two_versions(ws: Workspace, tmp_path: Path) -> None:
    a = version(ws, tmp_path, {"same": "s", "edit": "old", "gone/x": "x", "deep/er/keep": "k"})
    b = version(ws, tmp_path, {"edit": "new", "deep/er/new": "n"}, parents=[a.id], removes=["gone"])
    forward = {(c.kind, c.path) for c in a.diff(b)}
    assert forward == {("modified", "edit"), ("removed", "gone/x"), ("added", "deep/er/new")}
    backward = {(c.kind, c.path) for c in b.diff(a)}
    assert backward == {("modified", "edit"), ("added", "gone/x"), ("removed", "deep/er/new")}
    assert a.diff(a) == []
    (edit,) = [c for c in a.diff(b) if c.path == "edit"]
    assert edit.old is not None and edit.new is not None and edit.old.sha256 != edit.new.sha256


def test_current_draft_pointer_is_cleared_when_its_draft_closes_or_aborts(
    ws: Workspace, tmp_path: Path
) -> None:
    (tmp_path / "f").write_text("f")
    closed = Dataset.create("d", "proj", workspace=ws)
    assert Dataset.current_draft(workspace=ws).id == closed.id
    closed.add_files(tmp_path / "f")
    closed.finalize()
    with pytest.raises(UsageError, match="no current draft"):
        Dataset.current_draft(workspace=ws)

    aborted = Dataset.create("d", "proj", workspace=ws)
    assert Dataset.current_draft(workspace=ws).id == aborted.id
    aborted.abort()
    with pytest.raises(UsageError, match="no current draft"):
        Dataset.current_draft(workspace=ws)


def test_closing_another_draft_keeps_the_pointer(ws: Workspace, tmp_path: Path) -> None:
    (tmp_path / "f").write_text("f")
    first = Dataset.create("d", "proj", workspace=ws)
    second = Dataset.create("e", "proj", workspace=ws)
    first.add_files(tmp_path / "f")
    first.finalize()
    assert Dataset.current_draft(workspace=ws).id == second.id
    third = Dataset.create("x", "proj", workspace=ws)
    second.abort()
    assert Dataset.current_draft(workspace=ws).id == third.id


def test_empty_subdirectory_tree_is_in_the_store(ws: Workspace, tmp_path: Path) -> None:
    """Every tree a record reaches exists after finalize, the empty one too.

    Readers know the empty tree without fetching it, so a store can lack it (a writer that
    relied on that, or an object lost); a version inheriting an empty directory names it
    through the directory's entry without any editor writing it: finalize writes it always.
    """
    parent = version(ws, tmp_path, {"empty/": "", "f": "1"})
    ws.store.delete(object_key(EMPTY_TREE_HASH))
    child = version(ws, tmp_path, {"f": "2"}, parents=[parent.id])
    assert child.record.base != EMPTY_TREE_HASH and child.record.root != EMPTY_TREE_HASH
    assert ws.store.exists(object_key(EMPTY_TREE_HASH))
    assert child.verify_dataset_hash() == []


def test_tags_resolve_the_same_through_refs_and_get(ws: Workspace, tmp_path: Path) -> None:
    old = version(ws, tmp_path, {"a": "1"}, tags=["best", "q1"])
    new = version(ws, tmp_path, {"a": "2"}, parents=[old.id], tags=["best"])
    assert registry.resolve(ws.store, "tag:best").id == new.id
    assert Dataset.get(dataset_tags=["best"], workspace=ws).id == new.id
    assert Dataset.get(dataset_tags=["best", "q1"], workspace=ws).id == old.id
    assert Dataset.get(dataset_tags=["best"], dataset_project="proj", workspace=ws).id == new.id
    with pytest.raises(NotFoundError, match="carries tag 'best' in project 'other'"):
        Dataset.get(ref="tag:best", dataset_project="other", workspace=ws)
    with pytest.raises(NotFoundError, match="carries tags 'best', 'q2'"):
        Dataset.get(dataset_tags=["q2", "best"], workspace=ws)


def test_an_overlay_commit_leaves_no_staging_journal_and_keeps_the_pointer(
    ws: Workspace, tmp_path: Path
) -> None:
    base = version(ws, tmp_path, {"a": "a"})
    pending = Dataset.create("other", "proj", workspace=ws)
    upper = UpperLayer(tmp_path / "ov")
    upper.bind(base.id, base.record.root)
    view = MergedView(upper, ws.reader, upper.root)
    view.mkdir("made")
    result = commit_upper(upper, ws)
    upper.close()
    assert result.record is not None and result.record.parents == (base.id,)
    assert result.record.version == "1.0.1" and result.record.author
    assert not (ws.data_home / "drafts" / result.record.id).exists()
    assert Dataset.current_draft(workspace=ws).id == pending.id
