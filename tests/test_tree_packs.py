"""Tree packs: a version's new trees once more in one object, so a cold reader lists every folder
with one GET; trees are still checked one by one, and a damaged pack only costs GETs."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from fsmount.api.sync import gc, sync
from fsmount.api.workspace import Workspace
from fsmount.check.store_check import check_store
from fsmount.commit import registry
from fsmount.errors import FormatError
from fsmount.format import tree_packs
from fsmount.format.hashing import digest, object_key, record_key
from fsmount.format.objects import DirEntry
from fsmount.format.records import VersionRecord
from fsmount.format.tree_edit import walk_tree
from tests.fs_helpers import cli_mount
from tests.helpers import hash_tree, run_cli, write_tree

DIRS = 24


def _files(dirs: int = DIRS, per_dir: int = 5) -> dict[str, bytes | str]:
    return {f"c{i:02}/f{j}.txt": f"{i} {j}\n" * (j + 1) for i in range(dirs) for j in range(per_dir)}


def _version(tmp_path: Path, store_url: str, dirs: int = DIRS) -> tuple[Workspace, VersionRecord, Path]:
    src = write_tree(tmp_path / "src", _files(dirs))
    ws = Workspace(store_url, cache_dir=tmp_path / "cache-writer")
    ds, _ = sync(src, project="p", name="tp", workspace=ws)
    return ws, ds.record, src


def _walk_cold(store_url: str, vid: str, cache: Path) -> tuple[Workspace, list[str]]:
    """Every path of version `vid`, read through a fresh workspace and cache."""
    ws = Workspace(store_url, cache_dir=cache)
    rec = registry.readable_record(ws.reader, registry.read_state(ws.store, vid))
    return ws, sorted(p for p, e in walk_tree(ws.reader.tree, rec.root) if not isinstance(e, DirEntry))


def test_codec_round_trip_and_hostile_packs() -> None:
    trees = [b"\x83\xa6format\x01tree-a", b"tree-b", b""]
    got = tree_packs.decode_tree_pack(tree_packs.encode_tree_pack(trees))
    assert got == {digest(t): t for t in trees}
    assert tree_packs.encode_tree_pack(trees) == tree_packs.encode_tree_pack(reversed(trees))
    for bad in (b"", b"\x90", tree_packs.encode_tree_pack([])[:-1],
                b"\x83\xa6format\x01\xa4type\xa8treepack\xa5trees\x91\x01"):  # an int, not a bin
        with pytest.raises(FormatError):
            tree_packs.decode_tree_pack(bad)
    with pytest.raises(FormatError):
        tree_packs.check_tree_packs(((b"short", 10),))


def test_a_record_without_tree_packs_encodes_as_before(tmp_path: Path, file_store_url: str) -> None:
    _ws, rec, _ = _version(tmp_path, file_store_url, dirs=3)  # 4 trees: fewer than TREE_PACK_MIN_TREES
    assert rec.tree_packs == ()
    assert b"tree_packs" not in rec.encode()
    assert VersionRecord.decode(rec.encode()) == rec


def test_a_sync_of_many_folders_writes_one_tree_pack_of_all_its_trees(tmp_path: Path,
                                                                      file_store_url: str) -> None:
    ws, rec, _ = _version(tmp_path, file_store_url)
    assert len(rec.tree_packs) == 1
    h, size = rec.tree_packs[0]
    data = ws.store.get(object_key(h))
    assert digest(data) == h and len(data) == size
    trees = tree_packs.decode_tree_pack(data)
    walked = {rec.root}
    stack = [rec.root]
    while stack:
        for e in ws.reader.tree(stack.pop()).entries:
            if isinstance(e, DirEntry):
                walked.add(e.tree)
                stack.append(e.tree)
    assert set(trees) == walked  # the root and the 24 folders, each also stored alone
    for t in walked:
        assert ws.store.get(object_key(t)) == trees[t]
    assert VersionRecord.decode(ws.store.get(record_key(rec.id))).tree_packs == rec.tree_packs


def test_a_cold_reader_fetches_the_pack_not_each_tree(tmp_path: Path, s3_store_url: str) -> None:
    _, rec, _src = _version(tmp_path, s3_store_url)
    ws, paths = _walk_cold(s3_store_url, rec.id, tmp_path / "cold")
    assert paths == sorted(_files())
    st = ws.reader.stats
    # the root and two folders fetched alone (the third starts the pack's load), and the pack: not
    # one GET per folder
    assert st.tree_pack_trees == DIRS - 2, st
    assert st.objects_fetched == 4, st
    assert ws.reader.tree_packs.loaded == 1 and ws.reader.tree_packs.failed == 0
    # A second reader on the same cache: the pack comes from the disk cache, nothing from the store.
    ws2, paths2 = _walk_cold(s3_store_url, rec.id, tmp_path / "cold")
    assert paths2 == paths and ws2.reader.stats.objects_fetched == 0


def test_one_folder_alone_costs_its_own_get_not_the_pack(tmp_path: Path, s3_store_url: str) -> None:
    """Reading one file of a fresh mount (the first-byte case) must not wait for, or compete with, a
    pack download: the pack loads only once a second folder is missed."""
    _, rec, _ = _version(tmp_path, s3_store_url)
    ws = Workspace(s3_store_url, cache_dir=tmp_path / "cold")
    r = registry.readable_record(ws.reader, registry.read_state(ws.store, rec.id))
    root = ws.reader.tree(r.root)
    first = next(e for e in root.entries if isinstance(e, DirEntry))
    ws.reader.tree(first.tree)
    assert ws.reader.stats.objects_fetched == 2 and ws.reader.tree_packs.loaded == 0  # root, one folder
    others = [e.tree for e in root.entries if isinstance(e, DirEntry) and e.tree != first.tree]
    for t in others:
        ws.reader.tree(t)
    assert ws.reader.tree_packs.loaded == 1 and ws.reader.stats.objects_fetched == 4  # + 1 alone, + the pack
    assert ws.reader.stats.tree_pack_trees == len(others) - 1


def test_a_damaged_tree_pack_costs_gets_never_a_wrong_tree(tmp_path: Path, s3_store_url: str) -> None:
    ws, rec, _src = _version(tmp_path, s3_store_url)
    h, size = rec.tree_packs[0]
    data = bytearray(ws.store.get(object_key(h)))
    data[size // 2] ^= 0xFF
    ws.store.client.put_object(Bucket=ws.store.bucket, Key=ws.store.prefix + object_key(h), Body=bytes(data))
    cold, paths = _walk_cold(s3_store_url, rec.id, tmp_path / "cold")
    assert paths == sorted(_files())
    assert cold.reader.tree_packs.failed == 1 and cold.reader.stats.tree_pack_trees == 0
    assert cold.reader.stats.objects_fetched >= DIRS  # each folder alone, as without packs


def test_a_child_changing_one_file_writes_no_tree_pack(tmp_path: Path, file_store_url: str) -> None:
    ws, _rec, src = _version(tmp_path, file_store_url)
    (src / "c03" / "f1.txt").write_text("changed\n")
    before = {i.key for i in ws.store.list("objects/")}
    child, res = sync(src, project="p", name="tp", workspace=ws)
    assert res.modified == ["c03/f1.txt"]
    assert child.record.tree_packs == ()
    assert len({i.key for i in ws.store.list("objects/")} - before) == 3  # the file, c03's tree, the root


def test_gc_keeps_tree_packs_and_check_knows_them(tmp_path: Path, file_store_url: str) -> None:
    ws, rec, _ = _version(tmp_path, file_store_url)
    h, _ = rec.tree_packs[0]
    report = check_store(ws.store)
    assert report.ok and object_key(h) not in report.orphans, report.to_json()
    gc(workspace=ws, grace=0)
    assert ws.store.exists(object_key(h))
    ws.store.delete(object_key(h))
    report = check_store(ws.store)
    assert not report.ok and any(p.key == object_key(h) and "tree pack" in p.message for p in report.problems)


@pytest.mark.usefixtures("require_fuse")
def test_a_cold_mount_lists_every_folder_with_the_pack(tmp_path: Path, s3_store_url: str) -> None:
    """A read-only mount loads its version's tree pack before it reports ready: no lookup through it
    waits for a tree GET, and every folder's tree comes from the pack."""
    _, rec, src = _version(tmp_path, s3_store_url)
    with cli_mount(rec.id, tmp_path / "mnt", s3_store_url, tmp_path / "mcache") as mnt:
        at_start = json.loads(run_cli("status", str(mnt), "--json").stdout)["counters"]["store"]
        assert hash_tree(mnt) == hash_tree(src)
        c = json.loads(run_cli("status", str(mnt), "--json").stdout)["counters"]["store"]
    assert at_start["objects_fetched"] == 2, at_start  # the root, then the pack: both before "ready"
    assert c["tree_pack_trees"] == DIRS, c
    files = sum(len(fs) for _, _, fs in os.walk(src))
    assert c["objects_fetched"] == files + 2, c  # the files (one block each), the root, the pack


def test_lookups_take_trees_from_a_loaded_pack_without_a_thread(tmp_path: Path, s3_store_url: str) -> None:
    """Once the pack is loaded (a mount preloads it), every folder's lookup is answered on the
    event loop: a lookup that needed a worker thread would fail here."""
    import trio

    from fsmount.fs.core import ReadOnlyFS
    from fsmount.fs.inodes import ROOT_INO

    _, rec, _ = _version(tmp_path, s3_store_url)
    ws = Workspace(s3_store_url, cache_dir=tmp_path / "cold")
    rec = registry.readable_record(ws.reader, registry.read_state(ws.store, rec.id))
    ws.reader.tree(rec.root)
    loading = ws.reader.tree_packs.preload()
    assert loading is not None and loading.wait(30)
    fs = ReadOnlyFS(ws.reader, rec)

    async def no_thread(*args: object, **kwargs: object) -> object:
        raise AssertionError(f"offloaded: {args[:1]}")

    fs.blocks.offload = no_thread  # type: ignore[method-assign]

    async def walk() -> int:
        n = 0
        for i in range(DIRS):
            d = await fs.lookup(ROOT_INO, f"c{i:02}")
            n += sum([1 async for _ in fs.readdir(d.ino, 0)])
        return n

    assert trio.run(walk) == DIRS * 5
    assert ws.reader.stats.tree_pack_trees == DIRS
