"""Squash (clearml-data squash): a standalone version that is the merge of others, writing trees only."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.errors import FormatError, StateError
from fsmount.format.hashing import hash_from_key
from fsmount.format.objects import decode_tree
from fsmount.format.records import VersionState
from tests.fs_helpers import cli_mount
from tests.helpers import hash_tree, run_cli, run_json, write_tree

A_FILES: dict[str, bytes | str] = {"a.txt": "A1", "same.txt": "s", "d/x": "x-from-a", "d/only_a": "oa",
                                   "big.bin": os.urandom(300_000)}
B_FILES: dict[str, bytes | str] = {"a.txt": "A2-from-b", "d/x": "x-from-b", "d/only_b": "ob",
                                   "link": "->a.txt", "e/": ""}


def _version(ws: Workspace, tmp: Path, name: str, files: dict[str, bytes | str],
             parents: list[str] = ()) -> Dataset:  # type: ignore[assignment]
    ds = Dataset.create(name, "sq", parent_datasets=list(parents), workspace=ws, block_size=64 * 1024)
    if files:
        ds.add_files(write_tree(tmp / f"src-{name}-{ds.id}", files))
    ds.finalize()
    return ds


def _objects(ws: Workspace) -> dict[bytes, str]:
    return {h: i.key for i in ws.store.list("objects/") if (h := hash_from_key(i.key)) is not None}


def _is_tree(ws: Workspace, key: str) -> bool:
    try:
        decode_tree(ws.store.get(key))
        return True
    except FormatError:
        return False


def test_squash_writes_only_trees_and_its_tree_is_the_merge(
    store_url: str, tmp_path: Path, require_fuse: None
) -> None:
    ws = Workspace(store_url)
    a = _version(ws, tmp_path, "a", A_FILES)
    b = _version(ws, tmp_path, "b", B_FILES)
    before = _objects(ws)
    sq = Dataset.squash("squashed", [a.id, b.id], dataset_project="sq", workspace=ws)
    new = {h: k for h, k in _objects(ws).items() if h not in before}
    assert new, "the squash's root tree is new"
    assert all(_is_tree(ws, k) for k in new.values()), "squash wrote something that is not a tree"
    assert sq.state == "final" and sq.parents == [] and sq.record.parents == ()
    # the same merge a version with parents [a, b] gets (FORMAT.md §9), mounted for real
    merged = _version(ws, tmp_path, "merged", {}, parents=[a.id, b.id])
    assert sq.record.root == merged.record.root
    expected = {**A_FILES, **B_FILES}
    with cli_mount(sq.id, tmp_path / "m1", store_url, tmp_path / "cache") as m1, \
            cli_mount(merged.id, tmp_path / "m2", store_url, tmp_path / "cache") as m2:
        got = hash_tree(m1)
        assert got == hash_tree(m2)
        assert (m1 / "a.txt").read_text() == "A2-from-b" and (m1 / "d" / "only_a").read_text() == "oa"
        assert set(got) == {p for p in expected}
    # everything is listed as added (no parents), and the record's totals are the merged ones
    assert sorted(sq.list_added_files()) == sorted(p for p in expected if not p.endswith("/"))
    assert run_json("verify", "--store", store_url, sq.id)  # every tree and block it names is there
    run_cli("check", "--store", store_url)


def test_squash_cli_order_and_refusals(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    a = _version(ws, tmp_path, "a", A_FILES)
    b = _version(ws, tmp_path, "b", B_FILES)
    out = run_json("squash", "--store", store_url, "--name", "ba", a.id, "sq/b", "--version", "7")
    assert out["version"] == "7" and out["project"] == "sq"
    rev = run_json("squash", "--store", store_url, "--name", "ab", b.id, a.id)
    got = Dataset.get(ref=rev["id"], workspace=ws)
    assert dict(got.iter_entries())["a.txt"].sha256 == dict(a.iter_entries())["a.txt"].sha256  # later wins
    states_before = {s.id: s.state for s in registry.list_states(ws.store)}
    draft = Dataset.create("open", "sq", workspace=ws)
    states_before[draft.id] = "draft"
    objects_before = _objects(ws)
    for args in ((draft.id, a.id), (a.id, "sq/nope"), (a.id, a.id), (a.id, "zzz")):
        proc = run_cli("squash", "--store", store_url, "--name", "bad", *args, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert {s.id: s.state for s in registry.list_states(ws.store)} == states_before  # nothing made
    assert _objects(ws) == objects_before
    with pytest.raises(StateError, match="not final"):
        Dataset.squash("bad", [draft.id], workspace=ws)


def test_ambiguous_refs_are_refused_by_every_new_verb(file_store_url: str, tmp_path: Path) -> None:
    ws = Workspace(file_store_url)
    for last in "12":
        registry.create_state(ws.store, VersionState(
            id="abcd" + "0" * 27 + last, project="p", name=f"n{last}", version="1", parents=(), state="draft",
            tags=(), description="", created=1.0, updated=1.0, author="t"))
    before = sorted((i.key, i.size) for i in ws.store.list(""))
    for args in (("squash", "--name", "x", "abcd"), ("set-description", "abcd", "x"), ("metadata", "abcd"),
                 ("search", "--name", "[")):
        proc = run_cli(*args, "--store", file_store_url, check=False)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert sorted((i.key, i.size) for i in ws.store.list("")) == before
