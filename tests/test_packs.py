"""Packing at commit: packed small files read right everywhere; differential storage and dedup stay exact."""

from __future__ import annotations

import hashlib
import os
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.sync import sync
from fsmount.api.workspace import Workspace
from fsmount.format.objects import FileEntry
from fsmount.format.packs import objects_needed, selected_files
from fsmount.format.tree_edit import walk_tree
from fsmount.overlay.commit import commit_upper
from fsmount.overlay.merged import MergedView
from fsmount.overlay.upper import UpperLayer
from fsmount.store.base import ObjectStore
from tests.fs_helpers import cli_mount
from tests.helpers import hash_tree, run_cli, write_tree

KIB = 1024


@pytest.fixture(autouse=True)
def packing_on(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The configured default (1 MiB threshold, 32 MiB packs): conftest turns packing off for other tests."""
    monkeypatch.delenv("FSMOUNT_PACK_THRESHOLD", raising=False)


def _files(n_dirs: int, per_dir: int, seed: str = "x") -> dict[str, bytes | str]:
    out: dict[str, bytes | str] = {}
    for i in range(n_dirs):
        for j in range(per_dir):
            size = 1 + (i * 7919 + j * 104729) % (6 * KIB)
            blob = hashlib.sha256(f"{seed}{i}/{j}".encode()).digest()
            out[f"class{i:02}/img{j:04}.jpg"] = blob * (size // 32 + 1)
    return out


def _data_objects(store: ObjectStore, ws: Workspace) -> dict[str, int]:
    """Store keys under objects/ that are not trees (blocks and packs), with their sizes."""
    out = {}
    for info in store.list("objects/"):
        data = store.get(info.key)
        if not data.startswith(b"\x83\xa6format"):
            out[info.key] = info.size
    return out


def _entries(ws: Workspace, ds: Dataset) -> dict[str, FileEntry]:
    return dict(selected_files(ws.reader.tree, ds.record.root))


def test_packed_version_reads_right_through_get_copy_and_a_mount(store_url: str, tmp_path: Path) -> None:
    files = _files(6, 40)
    files.update({
        "big.bin": os.urandom(300 * KIB),  # above the threshold: its own blocks
        "empty.txt": b"",
        "link": "->big.bin",
        "class03/dup.jpg": files["class01/img0003.jpg"],  # the same bytes twice: one range
        "emptydir/": b"",
    })
    src = write_tree(tmp_path / "src", files)
    ws = Workspace(store_url, cache_dir=tmp_path / "cache")
    ds, _ = sync(src, project="p", name="packed", block_size=64 * KIB, workspace=ws,
                 pack_threshold=100 * KIB, pack_size=128 * KIB)
    entries = _entries(ws, ds)
    small = {p: e for p, e in entries.items() if 0 < e.size < 100 * KIB}
    assert len(small) == 241 and all(isinstance(e.blocks[0], tuple) for e in small.values())
    big = entries["big.bin"].blocks
    assert len(big) == 5 and all(isinstance(b, bytes) for b in big)
    assert entries["empty.txt"].blocks == ()
    assert entries["class03/dup.jpg"].blocks == entries["class01/img0003.jpg"].blocks
    packs = {e.blocks[0][0] for e in small.values()}  # type: ignore[index]
    total = sum(e.size for p, e in small.items() if p != "class03/dup.jpg")
    assert len(packs) == -(-total // (128 * KIB)) or len(packs) == -(-total // (128 * KIB)) + 1
    assert len(_data_objects(ws.store, ws)) == len(packs) + 5

    expected = hash_tree(src)
    assert hash_tree(Path(ds.get_local_copy())) == expected
    assert hash_tree(Path(ds.get_mutable_local_copy(tmp_path / "copy"))) == expected
    assert ds.verify_dataset_hash() == []
    # The CLI and a real mount, on a fresh cache.
    run_cli("get", ds.id, "--copy", str(tmp_path / "cli-copy"), "--store", store_url,
            "--cache-dir", str(tmp_path / "cache2"))
    assert hash_tree(tmp_path / "cli-copy") == expected
    with cli_mount(ds.id, tmp_path / "mnt", store_url, tmp_path / "cache3") as mnt:
        assert hash_tree(mnt) == expected


def test_packs_hold_a_directorys_files_together_in_tree_order(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", _files(4, 30))
    ws = Workspace(f"file://{tmp_path / 'store'}")
    ds, _ = sync(src, project="p", name="order", workspace=ws, pack_size=64 * KIB)
    located = [(p, e.blocks[0]) for p, e in walk_tree(ws.reader.tree, ds.record.root)
               if isinstance(e, FileEntry)]
    # Walking the tree in its order goes through the packs in order, each range right after the last.
    prev: tuple[bytes, int] | None = None
    packs_seen: list[bytes] = []
    for _, ref in located:
        assert isinstance(ref, tuple)
        h, off, length = ref
        if not packs_seen or packs_seen[-1] != h:
            assert h not in packs_seen, "a pack's files are not contiguous in tree order"
            packs_seen.append(h)
            assert off == 0
        else:
            assert prev is not None and off == prev[1]
        prev = (h, off + length)
    assert len(packs_seen) > 3


def test_a_child_changing_one_small_file_of_10000_adds_one_small_object_and_its_path(tmp_path: Path) -> None:
    files = {f"d{i:02}/f{j:03}.txt": f"file {i} {j}\n".encode() * 8 for i in range(100) for j in range(100)}
    src = write_tree(tmp_path / "src", files)
    ws = Workspace(f"file://{tmp_path / 'store'}")
    sync(src, project="p", name="big", workspace=ws)
    before = {i.key: i.size for i in ws.store.list("objects/")}
    data = _data_objects(ws.store, ws)
    assert len(data) == 1  # 10,000 files, 1.1 MB: one pack
    assert len(before) == 1 + 100 + 1 + 1 + 1  # the pack, 100 directories, the root, the empty tree,
    # and the version's tree pack (its 101 trees once more, in one object: FORMAT.md §4)

    (src / "d42" / "f007.txt").write_bytes(b"changed\n")
    child, res = sync(src, project="p", name="big", workspace=ws)
    assert res.modified == ["d42/f007.txt"] and not res.added and not res.removed
    after = {i.key: i.size for i in ws.store.list("objects/")}
    new = {k: s for k, s in after.items() if k not in before}
    assert len(new) == 3  # one small object for the file, the tree of d42, the root
    assert sum(1 for k in new if k in _data_objects(ws.store, ws)) == 1
    assert min(new.values()) == len(b"changed\n")
    assert hash_tree(Path(child.get_local_copy())) == hash_tree(src)


def test_contents_the_parent_holds_reuse_its_locators(tmp_path: Path) -> None:
    files = _files(3, 20)
    src = write_tree(tmp_path / "src", files)
    ws = Workspace(f"file://{tmp_path / 'store'}")
    parent, _ = sync(src, project="p", name="reuse", workspace=ws)
    old = _entries(ws, parent)
    before = set(_data_objects(ws.store, ws))
    # Rename a folder, copy a file under a new name, and add a file with known bytes through add+close.
    os.rename(src / "class01", src / "renamed")
    (src / "copy.jpg").write_bytes(files["class02/img0005.jpg"])  # type: ignore[arg-type]
    child, res = sync(src, project="p", name="reuse", workspace=ws)
    assert len(res.added) == 21 and len(res.removed) == 20
    assert set(_data_objects(ws.store, ws)) == before  # nothing packed again
    new = _entries(ws, child)
    assert new["renamed/img0004.jpg"].blocks == old["class01/img0004.jpg"].blocks
    assert new["copy.jpg"].blocks == old["class02/img0005.jpg"].blocks
    extra = write_tree(tmp_path / "extra", {"again.jpg": files["class00/img0001.jpg"]})
    third = Dataset.create("reuse", "p", parent_datasets=[child.id], workspace=ws)
    third.add_files(extra)
    stats = third.upload()
    assert stats.files_reused == 1 and stats.bytes_uploaded == 0
    third.finalize()
    assert _entries(ws, third)["again.jpg"].blocks == old["class00/img0001.jpg"].blocks
    assert set(_data_objects(ws.store, ws)) == before
    # (sync removed the files of the renamed folder, and keeps the folder)
    got = {p: h for p, h in hash_tree(Path(third.get_local_copy())).items() if p != "class01/"}
    assert got == {**hash_tree(src), **hash_tree(extra)}


def test_objects_needed_lists_the_distinct_packs_of_a_selection(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {**_files(4, 30), "big.bin": os.urandom(2 * 2**20)})
    ws = Workspace(f"file://{tmp_path / 'store'}")
    ds, _ = sync(src, project="p", name="warm", workspace=ws, pack_size=32 * KIB, block_size=2**20)
    every = objects_needed(ws.reader.tree, ds.record.root)
    assert len(every) == len(_data_objects(ws.store, ws))
    one_dir = objects_needed(ws.reader.tree, ds.record.root, ["class02"])
    assert 0 < len(one_dir) < len(every) and all(u.ranged for u in one_dir.values())
    sizes = {h: ws.store.head(f"objects/{h.hex()[:2]}/{h.hex()}").size for h in every}  # type: ignore[union-attr]
    for h, use in every.items():
        assert use.end <= sizes[h]
        if not use.ranged:  # the big file's blocks: used whole
            assert use.ranges == [(0, sizes[h])]
    # Every pack is fully used by the whole version (the commit packs nothing else).
    assert all(use.bytes_used == sizes[h] for h, use in every.items())
    with pytest.raises(Exception, match="no such file"):
        objects_needed(ws.reader.tree, ds.record.root, ["nope"])


def test_a_store_written_before_packs_still_mounts_and_reads(tmp_path: Path) -> None:
    """pack_threshold 0 writes exactly what fsmount wrote before packs: one bare block per small file."""
    files = _files(3, 20)
    src = write_tree(tmp_path / "src", files)
    store = f"file://{tmp_path / 'store'}"
    ws = Workspace(store)
    old, _ = sync(src, project="p", name="old", workspace=ws, pack_threshold=0)
    entries = _entries(ws, old)
    assert all(e.blocks == (e.sha256,) for e in entries.values())
    assert len(_data_objects(ws.store, ws)) == 60
    with cli_mount(old.id, tmp_path / "mnt", store, tmp_path / "cache") as mnt:
        assert hash_tree(mnt) == hash_tree(src)
    # A packed child of the old version: both kinds of locators, one version.
    (src / "class00" / "new.jpg").write_bytes(b"n" * 5000)
    (src / "class01" / "new.jpg").write_bytes(b"m" * 5000)
    child, _ = sync(src, project="p", name="old", workspace=ws)
    kinds = {type(e.blocks[0]) for e in _entries(ws, child).values()}
    assert kinds == {bytes, tuple}
    with cli_mount(child.id, tmp_path / "mnt", store, tmp_path / "cache2") as mnt:
        assert hash_tree(mnt) == hash_tree(src)


def test_pack_options_on_the_cli_and_in_the_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    src = write_tree(tmp_path / "src", _files(2, 30))
    store = f"file://{tmp_path / 'store'}"
    run_cli("sync", "--folder", str(src), "--project", "p", "--name", "cli", "--store", store,
            "--pack-size", "16KiB", "--quiet")
    ws = Workspace(store)
    first = Dataset.get(ref="p/cli", workspace=ws)
    packs = {e.blocks[0][0] for e in _entries(ws, first).values()}  # type: ignore[index]
    assert len(packs) > 5
    monkeypatch.setenv("FSMOUNT_PACK_THRESHOLD", "0")
    (src / "class00" / "x.jpg").write_bytes(b"y" * 3000)
    (src / "class00" / "z.jpg").write_bytes(b"z" * 3000)
    run_cli("sync", "--folder", str(src), "--project", "p", "--name", "cli", "--store", store, "--quiet")
    second = Dataset.get(ref="p/cli", workspace=ws)
    assert second.id != first.id
    new = _entries(ws, second)
    assert all(isinstance(new[p].blocks[0], bytes) for p in ("class00/x.jpg", "class00/z.jpg"))
    bad = run_cli("sync", "--folder", str(src), "--project", "p", "--name", "cli", "--store", store,
                  "--pack-size", "12", check=False)
    assert bad.returncode != 0 and "pack" in bad.stderr and "Traceback" not in bad.stderr


def test_the_overlay_commit_of_a_writable_mount_packs_too(tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", _files(2, 5))
    ws = Workspace(f"file://{tmp_path / 'store'}")
    base, _ = sync(src, project="p", name="ov", workspace=ws)
    upper = UpperLayer(tmp_path / "overlay")
    try:
        upper.bind(base.id, base.record.root)
        view = MergedView(upper, ws.reader, base.record.root)
        for i in range(3):
            fh = view.create(f"new{i}.txt", 0o644)
            view.write(fh, 0, f"written in the overlay {i}\n".encode() * 50)
            view.release(fh)
        result = commit_upper(upper, ws, message="overlay")
    finally:
        upper.close()
    assert result.record is not None and result.stats.files_packed == 3 and result.stats.packs_written == 1
    child = Dataset.get(ref=result.record.id, workspace=ws)
    entries = _entries(ws, child)
    assert len({e.blocks[0][0] for p, e in entries.items() if p.startswith("new")}) == 1  # type: ignore[index]
    assert all(isinstance(entries[f"new{i}.txt"].blocks[0], tuple) for i in range(3))
    assert Path(child.get_local_copy(), "new2.txt").read_bytes() == b"written in the overlay 2\n" * 50
