"""Audit of issue 9 ("nothing lost") on the new write paths: gc --repack, squash, rename, attachments.

tests/test_crash_sweep.py's sweep: a FaultyStore crashes the operation at each of its writes in turn;
`fsmount check` (check_store) must pass right after the crash, the operation run again by the next
process must complete, the check must pass again, and every final version must hold exactly its
content (and its new name, its attachment, its repointed tree).
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api import catalog
from fsmount.api.sync import gc, sync
from fsmount.api.workspace import Workspace
from fsmount.commit import attachments, lifecycle, locks, registry
from fsmount.errors import NotFoundError
from fsmount.format.objects import FileEntry
from fsmount.format.packs import selected_files
from fsmount.format.records import READABLE_STATES
from tests import test_crash_sweep as cs
from tests.helpers import hash_tree, write_tree


def _blob(seed: str, size: int) -> bytes:
    return (hashlib.sha256(seed.encode()).digest() * (size // 32 + 1))[:size]


A = {f"d{i}/f{j:02}.bin": _blob(f"a {i} {j}", 600 + 91 * j) for i in range(2) for j in range(10)}
B: dict[str, bytes | str] = {f"d0/f{j:02}.bin": _blob(f"b {j}", 800 + 13 * j) for j in range(10)}
B.update({"d1/f03.bin": A["d1/f03.bin"], "d1/f04.bin": A["d1/f04.bin"], "top.txt": b"top\n"})


def _versions(ws: Workspace) -> dict[str, dict[str, str]]:
    """id -> content of every readable version."""
    out = {}
    for st in registry.list_states(ws.store):
        if st.state in READABLE_STATES:
            out[st.id] = cs._content(ws, st.id)
    return out


@pytest.fixture
def packing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSMOUNT_PACK_THRESHOLD", raising=False)
    monkeypatch.setenv("FSMOUNT_PACK_SIZE", "6KiB")


@pytest.mark.usefixtures("packing")
def test_gc_repack_survives_a_crash_at_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """B (a child of A) keeps two files of A's packs; A is deleted (--force); gc --repack copies those
    ranges into new packs and repoints B. Crashed anywhere (the gc lock then stays behind until it
    is stale), the next gc finishes it."""
    a, b = write_tree(tmp_path / "a", A), write_tree(tmp_path / "b", B)

    def prepare(env: cs.Env, ws: Workspace) -> None:
        va = sync(a, project="p", name="b", workspace=ws)[0].id
        env.ctx["b"] = sync(b, project="p", name="b", workspace=ws)[0].id  # a child: keeps A's locators
        lifecycle.delete(ws.store, va, force=True)
        env.ctx["before"] = _versions(ws)

    def operation(env: cs.Env, ws: Workspace) -> None:
        res = gc(ws, grace=0, repack=True, repack_below=0.9)
        assert res["packs_repacked"] >= 1 and res["versions_repointed"] == 1, res

    def recover(env: cs.Env, ws: Workspace) -> str:
        with pytest.MonkeyPatch.context() as mp:
            mp.setattr(locks, "STALE_AFTER", 0.0)  # "fifteen minutes later": the dead gc's lock is stale
            gc(ws, grace=0, repack=True, repack_below=0.9)
        assert _versions(ws) == env.ctx["before"]
        ds = Dataset.get(ref=env.ctx["b"], workspace=ws)
        kept = [e for p, e in selected_files(ws.reader.tree, ds.record.root) if p.startswith("d1/")]
        assert all(isinstance(e, FileEntry) for e in kept)
        return str(env.ctx["b"])

    total = cs.sweep(tmp_path, monkeypatch, cs._file_url, prepare, operation, recover, hash_tree(b))
    assert total >= 4


def test_squash_survives_a_crash_at_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = write_tree(tmp_path / "a", A), write_tree(tmp_path / "b", B)
    want = hash_tree(write_tree(tmp_path / "merged", {**A, **B}))

    def prepare(env: cs.Env, ws: Workspace) -> None:
        env.ctx["ids"] = [sync(a, project="p", name="a", block_size=cs.BS, workspace=ws)[0].id,
                          sync(b, project="p", name="b", block_size=cs.BS, workspace=ws)[0].id]
        env.ctx["before"] = _versions(ws)

    def operation(env: cs.Env, ws: Workspace) -> None:
        catalog.squash(ws, "sq", env.ctx["ids"], "p")

    def recover(env: cs.Env, ws: Workspace) -> str:
        done = cs._newest_final(ws, "sq")
        vid = done.id if done is not None else catalog.squash(ws, "sq", env.ctx["ids"], "p").id
        after = _versions(ws)
        assert {k: v for k, v in after.items() if k in env.ctx["before"]} == env.ctx["before"]
        assert len(after) == len(env.ctx["before"]) + 1  # one squash, whatever the crash left
        return vid

    total = cs.sweep(tmp_path, monkeypatch, cs._file_url, prepare, operation, recover, want)
    assert total >= 4


def test_rename_survives_a_crash_at_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    a, b = write_tree(tmp_path / "a", A), write_tree(tmp_path / "b", B)

    def prepare(env: cs.Env, ws: Workspace) -> None:
        env.ctx["v1"] = sync(a, project="p", name="old", block_size=cs.BS, workspace=ws)[0].id
        env.ctx["v2"] = sync(b, project="p", name="old", block_size=cs.BS, workspace=ws)[0].id
        env.ctx["before"] = _versions(ws)

    def operation(env: cs.Env, ws: Workspace) -> None:
        catalog.rename(ws, "p", "old", "q", "new")

    def recover(env: cs.Env, ws: Workspace) -> str:
        try:
            catalog.rename(ws, "p", "old", "q", "new")  # a rename cut short is finished by running it again
        except NotFoundError as e:
            assert "renamed to q/new" in str(e), e  # it had moved every version already
        states = {s.id: s for s in registry.list_states(ws.store)}
        for vid in (env.ctx["v1"], env.ctx["v2"]):
            assert (states[vid].project, states[vid].name) == ("q", "new"), states[vid]
        assert _versions(ws) == env.ctx["before"]
        assert registry.resolve(ws.store, "q/new").id == env.ctx["v2"]
        assert registry.resolve(ws.store, f"q/new@{states[env.ctx['v1']].version}").id == env.ctx["v1"]
        return str(env.ctx["v2"])

    total = cs.sweep(tmp_path, monkeypatch, cs._file_url, prepare, operation, recover, hash_tree(b))
    assert total >= 3


@pytest.mark.parametrize("torn", [False, True], ids=["crash", "after-a-torn-put"])
def test_metadata_attachments_survive_a_crash_at_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                            torn: bool) -> None:
    a = write_tree(tmp_path / "a", A)
    blob = _blob("attached", 5000)

    def prepare(env: cs.Env, ws: Workspace) -> None:
        env.ctx["v"] = sync(a, project="p", name="m", block_size=cs.BS, workspace=ws)[0].id
        attachments.put_attachment(ws.store, env.ctx["v"], "first", "bytes", b"one")
        if torn:  # an earlier process's PUT of the blob was torn: its first half is at the key
            ws.store.put(attachments.blob_key(hashlib.sha256(blob).digest()), blob[:2500])

    def operation(env: cs.Env, ws: Workspace) -> None:
        attachments.put_attachment(ws.store, env.ctx["v"], "second", "bytes", blob)
        attachments.put_attachment(ws.store, env.ctx["v"], "third", "json", b'{"a": 1}')
        attachments.remove_attachment(ws.store, env.ctx["v"], "first")

    def recover(env: cs.Env, ws: Workspace) -> str:
        attachments.put_attachment(ws.store, env.ctx["v"], "second", "bytes", blob)
        attachments.put_attachment(ws.store, env.ctx["v"], "third", "json", b'{"a": 1}')
        if "first" in {x.name for x in attachments.list_attachments(ws.store, env.ctx["v"])}:
            attachments.remove_attachment(ws.store, env.ctx["v"], "first")
        assert attachments.read_attachment(ws.store, env.ctx["v"], "second")[1] == blob
        assert attachments.read_attachment(ws.store, env.ctx["v"], "third")[1] == b'{"a": 1}'
        assert [x.name for x in attachments.list_attachments(ws.store, env.ctx["v"])] == ["second", "third"]
        return str(env.ctx["v"])

    total = cs.sweep(tmp_path, monkeypatch, cs._file_url, prepare, operation, recover, hash_tree(a))
    assert total >= 2
