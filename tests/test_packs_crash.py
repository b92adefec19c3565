"""Crash safety of packed commits: every commit path, packing on, crashed at every write, checked, rerun.

The sweep itself is tests/test_crash_sweep.py's (FaultyStore, store check after the crash, rerun by
a fresh process, exact content). Here packing is on, with packs small enough that one commit writes
several, so crashes land between packs, between a pack and the journal line of its files, and in
the trees and record after them.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.sync import sync
from fsmount.api.workspace import Workspace
from fsmount.format.objects import FileEntry
from fsmount.format.packs import selected_files
from tests import test_crash_sweep as cs
from tests.helpers import hash_tree, write_tree

PACK = "8KiB"


@pytest.fixture(autouse=True)
def small_packs(isolated_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSMOUNT_PACK_THRESHOLD", raising=False)
    monkeypatch.setenv("FSMOUNT_PACK_SIZE", PACK)


def _blob(seed: str, size: int) -> bytes:
    return (hashlib.sha256(seed.encode()).digest() * (size // 32 + 1))[:size]


V1 = {f"d{i}/f{j:02}.bin": _blob(f"v1 {i} {j}", 700 + 97 * j) for i in range(3) for j in range(12)}
V1["top.txt"] = b"top\n"
V2: dict[str, bytes | str] = {k.replace("d2/", "moved/"): v for k, v in V1.items() if k != "d0/f03.bin"}
V2.update({f"d1/f{j:02}.bin": _blob(f"v2 {j}", 900 + 55 * j) for j in range(0, 12, 2)})  # modified
V2.update({f"new/n{j}.bin": _blob(f"new {j}", 1500) for j in range(8)})  # added
V2["new/same.bin"] = V1["d0/f05.bin"]  # known content: reused, not packed
V2["link"] = "->top.txt"


def _packed(ws: Workspace, version_id: str) -> int:
    """Files of the version read through ranged locators."""
    ds = Dataset.get(ref=version_id, workspace=ws)
    return sum(1 for _, e in selected_files(ws.reader.tree, ds.record.root)
               if isinstance(e, FileEntry) and e.blocks and isinstance(e.blocks[0], tuple))


def test_packed_sync_survives_a_crash_at_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    v1, v2 = write_tree(tmp_path / "v1", V1), write_tree(tmp_path / "v2", V2)
    expected = {**hash_tree(v2), "d2/": "/"}  # sync removes the files of a vanished folder, not the folder

    def prepare(env: cs.Env, ws: Workspace) -> None:
        env.ctx["parent"] = sync(v1, project="p", name="s", workspace=ws)[0].id

    def operation(env: cs.Env, ws: Workspace) -> None:
        sync(v2, project="p", name="s", workspace=ws)

    def recover(env: cs.Env, ws: Workspace) -> str:
        cs._finish_drafts(ws, "s")
        newest = cs._newest_final(ws, "s")
        if newest is None or newest.id == env.ctx["parent"]:
            newest = sync(v2, project="p", name="s", workspace=ws)[0]
        assert newest.parents == [env.ctx["parent"]]
        # Nothing lost, nothing counted twice.
        assert newest.record.files == sum(1 for k in V2 if not k.endswith("/"))
        assert _packed(ws, newest.id) >= 20
        return newest.id

    total = cs.sweep(tmp_path, monkeypatch, cs._file_url, prepare, operation, recover, expected, torn=True)
    assert total >= 10


def test_packed_upload_then_close_survives_a_crash_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """`upload` journals each pack's files after the pack is stored; a crashed one is finished by `close`."""
    v1 = write_tree(tmp_path / "v1", V1)
    extra = write_tree(tmp_path / "extra", {f"x/e{j}.bin": _blob(f"extra {j}", 2000 + j) for j in range(12)})
    expected = {**hash_tree(v1), **hash_tree(extra)}

    def prepare(env: cs.Env, ws: Workspace) -> None:
        env.ctx["parent"] = sync(v1, project="p", name="c", workspace=ws)[0].id

    def operation(env: cs.Env, ws: Workspace) -> None:
        ds = Dataset.create("c", "p", parent_datasets=[env.ctx["parent"]], workspace=ws)
        ds.add_files(extra)
        ds.upload()
        ds.finalize(message="crash me")

    def recover(env: cs.Env, ws: Workspace) -> str:
        cs._finish_drafts(ws, "c")
        newest = cs._newest_final(ws, "c")
        if newest is None or newest.id == env.ctx["parent"]:
            operation(env, ws)
            newest = cs._newest_final(ws, "c")
            assert newest is not None
        assert newest.record.files == len(V1) + 12
        return newest.id

    cs.sweep(tmp_path, monkeypatch, cs._file_url, prepare, operation, recover, expected)


def test_the_crash_sweeps_commit_paths_with_packing_on(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The original sweeps' data packs (a sanity check of this module's set-up), and their overlay commit
    and add+close paths survive every crash with packing on."""
    src = write_tree(tmp_path / "probe", cs.V2)
    ws = Workspace(f"file://{tmp_path / 'probe-store'}")
    ds = sync(src, project="p", name="probe", block_size=cs.BS, workspace=ws)[0]
    assert _packed(ws, ds.id) >= 4
    cs.test_overlay_commit_survives_a_crash_at_every_write(tmp_path / "overlay", monkeypatch)
    cs.test_create_add_close_survives_a_crash_at_every_write(tmp_path / "close", monkeypatch)
