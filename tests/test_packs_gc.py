"""gc and packs: a pack stays while any version uses a range of it; --repack rewrites sparse packs."""

from __future__ import annotations

import hashlib
import os
import time
from pathlib import Path

import msgpack
import pytest

from fsmount import Dataset
from fsmount.api.sync import gc, sync
from fsmount.api.workspace import Workspace
from fsmount.format.hashing import state_key
from fsmount.format.packs import objects_needed, selected_files
from tests.fs_helpers import cli_mount
from tests.helpers import hash_tree, run_cli, run_json, write_tree

KIB = 1024


@pytest.fixture(autouse=True)
def packing_on(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSMOUNT_PACK_THRESHOLD", raising=False)


def _blob(seed: str, size: int) -> bytes:
    return (hashlib.sha256(seed.encode()).digest() * (size // 32 + 1))[:size]


def _store_bytes(ws: Workspace) -> int:
    return sum(i.size for i in ws.store.list("objects/"))


def _packs(ws: Workspace, ds: Dataset) -> set[bytes]:
    return {h for h, u in objects_needed(ws.reader.tree, ds.record.root).items() if u.ranged}


def _two_versions(tmp_path: Path, ws: Workspace) -> tuple[Dataset, Dataset, Path]:
    """v1 packed in several packs; v2 changes every other file, so each of v1's packs is half used by v2."""
    files = {f"c{i}/f{j:02}.bin": _blob(f"{i} {j}", 1000 + 37 * j) for i in range(4) for j in range(24)}
    src = write_tree(tmp_path / "src", files)
    v1, _ = sync(src, project="p", name="gc", workspace=ws, pack_size="16KiB")
    for i in range(4):
        for j in range(0, 24, 2):
            (src / f"c{i}" / f"f{j:02}.bin").write_bytes(_blob(f"new {i} {j}", 900 + 11 * j))
    v2, res = sync(src, project="p", name="gc", workspace=ws, pack_size="16KiB")
    assert len(res.modified) == 48
    return v1, v2, src


def test_gc_keeps_partly_used_packs_and_repack_frees_them(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url, cache_dir=tmp_path / "cache")
    v1, v2, src = _two_versions(tmp_path, ws)
    old_packs = _packs(ws, v1)
    assert len(old_packs) >= 6 and old_packs & _packs(ws, v2)
    changes_before = v2.changes()
    v1.delete(force=True)
    still_used = old_packs & _packs(ws, v2)
    gc(ws, grace=0)
    assert still_used == old_packs  # every pack of v1 still holds files v2 uses: none may go
    assert all(ws.store.exists(f"objects/{h.hex()[:2]}/{h.hex()}") for h in old_packs)
    assert hash_tree(Path(v2.get_mutable_local_copy(tmp_path / "after-gc"))) == hash_tree(src)

    before = _store_bytes(ws)
    dry = gc(ws, grace=0, repack=True, repack_below=0.75, dry_run=True)
    assert dry["packs_repacked"] == len(old_packs) and dry["versions_repointed"] == 0
    assert _store_bytes(ws) == before
    res = gc(ws, grace=0, repack=True, repack_below=0.75, pack_size=16 * KIB)
    assert res["packs_repacked"] == len(old_packs) and res["versions_repointed"] == 1
    assert res["deleted"] >= len(old_packs)
    after = _store_bytes(ws)
    assert after < before - 40 * KIB, (before, after)
    assert not any(ws.store.exists(f"objects/{h.hex()[:2]}/{h.hex()}") for h in old_packs)

    # Every version still reads right: a fresh process, a fresh cache, get, get --copy, verify, diff.
    ws2 = Workspace(store_url, cache_dir=tmp_path / "cache2")
    again = Dataset.get(ref=v2.id, workspace=ws2)
    assert not _packs(ws2, again) & old_packs
    assert hash_tree(Path(again.get_local_copy())) == hash_tree(src)
    assert hash_tree(Path(again.get_mutable_local_copy(tmp_path / "copy"))) == hash_tree(src)
    assert again.verify_dataset_hash() == []
    assert [(c.kind, c.path) for c in again.changes()] == [(c.kind, c.path) for c in changes_before]
    check = run_cli("check", "--store", store_url, "--cache-dir", str(tmp_path / "cache2"), check=False)
    assert check.returncode == 0, check.stdout + check.stderr  # the store's walk follows the new root
    # Its state says where it is read from now; a reader of format 1 refuses it instead of misreading.
    raw = msgpack.unpackb(ws2.store.get(state_key(v2.id)), raw=False)
    assert raw["format"] == 2 and raw["root"] == again.record.root != ws2.reader.record(v2.id).root
    # A child of the repacked version commits and reads through the new trees.
    (src / "c0" / "f01.bin").write_bytes(b"child\n")
    v3, _ = sync(src, project="p", name="gc", workspace=ws2)
    assert v3.parents == [v2.id] and [c.path for c in v3.changes()] == ["c0/f01.bin"]
    assert hash_tree(Path(v3.get_local_copy())) == hash_tree(src)
    # Nothing left to repack, and a plain gc keeps all of it.
    assert gc(ws2, grace=0, repack=True, repack_below=0.75)["packs_repacked"] == 0
    with cli_mount(v2.id, tmp_path / "mnt", store_url, tmp_path / "cache3") as mnt:
        (src / "c0" / "f01.bin").write_bytes(_blob("0 1", 1000 + 37))
        assert hash_tree(mnt) == hash_tree(src)


def test_the_replaced_trees_stay_for_the_grace_period(tmp_path: Path) -> None:
    """Mounts opened before a repack read the old trees and packs: they stay for --grace, then go."""
    store = f"file://{tmp_path / 'store'}"
    ws = Workspace(store, cache_dir=tmp_path / "cache")
    v1, v2, src = _two_versions(tmp_path, ws)
    old_packs = _packs(ws, v1)
    v1.delete(force=True)
    old = time.time() - 10 * 3600
    for dirpath, _, names in os.walk(tmp_path / "store" / "objects"):
        for n in names:
            os.utime(os.path.join(dirpath, n), (old, old))
    res = run_json("gc", "--repack", "--repack-below", "0.75", "--grace", "1h", "--store", store,
                   "--cache-dir", str(tmp_path / "cache"))
    assert res["packs_repacked"] == len(old_packs) and res["versions_repointed"] == 1
    assert all(ws.store.exists(f"objects/{h.hex()[:2]}/{h.hex()}") for h in old_packs)
    res = run_json("gc", "--grace", "0", "--store", store, "--cache-dir", str(tmp_path / "cache"))
    assert res["deleted"] >= len(old_packs)
    assert not any(ws.store.exists(f"objects/{h.hex()[:2]}/{h.hex()}") for h in old_packs)
    fresh = Workspace(store, cache_dir=tmp_path / "fresh")
    again = Dataset.get(ref=v2.id, workspace=fresh)
    assert hash_tree(Path(again.get_local_copy())) == hash_tree(src)
    assert again.verify_dataset_hash() == []
    assert not {h for _, e in selected_files(fresh.reader.tree, again.record.root) for h in
                (b if isinstance(b, bytes) else b[0] for b in e.blocks)} & old_packs
