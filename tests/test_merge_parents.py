"""A version whose parents are merged: with no files of its own, or with changes below a merged folder."""

from __future__ import annotations

from pathlib import Path

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from tests.helpers import hash_tree, write_tree


def test_two_parents_merge_with_and_without_changes_of_its_own(tmp_path: Path, store_url: str) -> None:
    ws = Workspace(store_url, cache_dir=tmp_path / "cache")
    a = Dataset.create("a", "merge", workspace=ws)
    a.add_files(write_tree(tmp_path / "a", {"d/x.txt": b"from a", "only_a.txt": b"a"}))
    a.finalize()
    b = Dataset.create("b", "merge", workspace=ws)
    b.add_files(write_tree(tmp_path / "b", {"d/x.txt": b"from b", "d/y.txt": b"y"}))
    b.finalize()
    plain = Dataset.create("m", "merge", parent_datasets=[a.id, b.id], workspace=ws)
    plain.finalize()  # nothing of its own: the merge alone
    want = {"d/x.txt": b"from b", "d/y.txt": b"y", "only_a.txt": b"a"}  # the later parent wins
    assert hash_tree(Path(plain.get_local_copy())) == hash_tree(write_tree(tmp_path / "want1", want))
    edited = Dataset.create("m", "merge", parent_datasets=[a.id, b.id], workspace=ws)
    edited.add_files(write_tree(tmp_path / "e", {"z.txt": b"z"}), dataset_path="d")
    edited.remove_files("only_a.txt")
    edited.finalize()
    want2 = {"d/x.txt": b"from b", "d/y.txt": b"y", "d/z.txt": b"z"}
    fresh = Workspace(store_url, cache_dir=tmp_path / "fresh")  # read back from the store alone
    got = Dataset.get(dataset_id=edited.id, workspace=fresh).get_local_copy()
    assert hash_tree(Path(got)) == hash_tree(write_tree(tmp_path / "want2", want2))
