"""Differential storage, shown by counting what reaches the store."""

from __future__ import annotations

import os
from pathlib import Path

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from tests.helpers import count_objects, hash_tree, write_tree


def test_one_small_change_in_1000_files_adds_one_block_and_the_trees_on_its_path(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    files = {f"d{i}/f{j:03}.txt": f"file {i} {j}\n" for i in range(10) for j in range(100)}
    src = write_tree(tmp_path / "v1", files)
    parent = Dataset.create("diff", "proj", workspace=ws)
    parent.add_files(src)
    parent.finalize()
    objects_before, _ = count_objects(store)
    # 1000 distinct blocks, 10 directories, the root, and the empty tree (a root version's base)
    assert objects_before == 1000 + 11 + 1

    (tmp_path / "edit").mkdir()
    edited = write_tree(tmp_path / "edit", {"f050.txt": "changed\n"})
    child = Dataset.create("diff", "proj", parent_datasets=[parent.id], workspace=ws)
    child.add_files(edited / "f050.txt", dataset_path="d3")
    child.finalize()
    objects_after, _ = count_objects(store)
    assert objects_after - objects_before == 3  # the new block, d3's tree, the root tree
    assert child.list_modified_files() == ["d3/f050.txt"] and not child.list_added_files()
    expected = {**hash_tree(src)}
    expected["d3/f050.txt"] = hash_tree(edited)["f050.txt"]
    assert hash_tree(Path(child.get_local_copy())) == expected


def test_appending_1mib_to_64mib_uploads_one_block(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    data = tmp_path / "data"
    data.mkdir()
    big = data / "big.bin"
    big.write_bytes(os.urandom(64 * 2**20))
    parent = Dataset.create("append", "proj", workspace=ws)
    parent.add_files(data)
    parent.finalize()
    _, bytes_before = count_objects(store)

    with open(big, "ab") as f:
        f.write(os.urandom(2**20))
    child = Dataset.create("append", "proj", parent_datasets=[parent.id], workspace=ws)
    child.add_files(data)
    stats = child.upload()
    child.finalize()
    _, bytes_after = count_objects(store)
    assert stats.bytes_uploaded == 2**20  # the appended MiB is the only new block
    assert stats.blocks_deduplicated == 16
    assert bytes_after - bytes_before < 2**20 + 4096  # plus one small tree object
    assert child.list_modified_files() == ["big.bin"]
