"""Version strings are unique per dataset: reserved with a conditional create (issue 9)."""

from __future__ import annotations

import multiprocessing
import os
import time
from pathlib import Path
from typing import Any

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.commit.drafts import name_key
from fsmount.format.hashing import new_version_id
from fsmount.format.records import VersionState
from tests.helpers import run_cli, run_json


def _final(ws: Workspace, tmp: Path, version: str | None = None, parents: list[str] | None = None) -> Dataset:
    ds = Dataset.create("n", "p", version, parents or [], workspace=ws)
    (tmp / f"f-{ds.id}").write_text(ds.id)
    ds.add_files(tmp / f"f-{ds.id}")
    ds.finalize()
    return ds


def _child(url: str, parent: str, barrier: Any, out: Any) -> None:
    barrier.wait()
    ds = Dataset.create("n", "p", parent_datasets=[parent], workspace=Workspace(url))
    out.put((ds.id, ds.version))


def test_concurrent_children_of_one_parent_get_distinct_versions(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    parent = _final(ws, tmp_path)
    ctx = multiprocessing.get_context("spawn")
    barrier, out = ctx.Barrier(4), ctx.Queue()
    procs = [ctx.Process(target=_child, args=(store_url, parent.id, barrier, out)) for _ in range(4)]
    for p in procs:
        p.start()
    got = [out.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    versions = sorted(v for _, v in got)
    assert len(set(versions)) == 4 and all(v.startswith("1.0.") and v != "1.0.0" for v in versions)
    listed = [s.version for s in registry.list_states(ws.store) if s.name == "n"]
    assert sorted(listed) == ["1.0.0", *versions]
    for vid, v in got:  # each reservation names its own draft
        assert ws.store.get(name_key("p", "n", v)).decode() == vid


def test_a_taken_version_is_refused_in_one_line(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    first = _final(ws, tmp_path, "2.0")
    proc = run_cli("create", "--project", "p", "--name", "n", "--version", "2.0", "--store", store_url,
                   check=False)
    assert proc.returncode == 4 and len(proc.stderr.strip().splitlines()) == 1
    assert "taken" in proc.stderr and first.id in proc.stderr
    assert run_json("create", "--project", "p", "--name", "other", "--version", "2.0",
                    "--store", store_url)["version"] == "2.0"  # per dataset


def _old_state(ws: Workspace, version: str) -> VersionState:
    """A state written as a store from before reservations has it: no version-names/ object."""
    now = time.time()
    st = VersionState(id=new_version_id(), project="p", name="n", version=version, parents=(),
                      state="draft", tags=(), description="", created=now, updated=now, author="old")
    return registry.create_state(ws.store, st)


def test_versions_of_an_old_store_are_taken_too(file_store_url: str) -> None:
    ws = Workspace(file_store_url)
    old = _old_state(ws, "1.0.0")
    proc = run_cli("create", "--project", "p", "--name", "n", "--version", "1.0.0", "--store", file_store_url,
                   check=False)
    assert proc.returncode == 4 and old.id in proc.stderr
    made = run_json("create", "--project", "p", "--name", "n", "--store", file_store_url)
    assert made["version"] == "1.0.1"


def test_a_version_string_naming_two_versions_is_ambiguous(file_store_url: str) -> None:
    ws = Workspace(file_store_url)
    a, b = _old_state(ws, "1.0.0"), _old_state(ws, "1.0.0")
    proc = run_cli("info", "p/n@1.0.0", "--store", file_store_url, check=False)
    assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1
    assert a.id in proc.stderr and b.id in proc.stderr and "ambiguous" not in proc.stdout


def test_abort_and_delete_release_the_version(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    d = Dataset.create("n", "p", "3.0", workspace=ws)
    run_cli("abort", d.id, "--store", store_url)
    assert not ws.store.exists(name_key("p", "n", "3.0"))
    again = Dataset.create("n", "p", "3.0", workspace=ws)  # the aborted draft gave it back
    assert run_json("info", "p/n@3.0", "--store", store_url)["id"] == again.id  # the aborted one: not counted
    run_cli("delete", again.id, "--store", store_url)
    assert not ws.store.exists(name_key("p", "n", "3.0"))
    assert Dataset.create("n", "p", "3.0", workspace=ws).version == "3.0"


def test_release_only_drops_a_reservation_that_still_names_the_version(file_store_url: str) -> None:
    ws = Workspace(file_store_url)
    d = Dataset.create("n", "p", "4.0", workspace=ws)
    key = name_key("p", "n", "4.0")
    _, etag = ws.store.get_versioned(key)
    other = new_version_id()
    ws.store.put_conditional(key, other.encode(), if_match=etag)  # taken over meanwhile
    d.delete()
    assert ws.store.get(key).decode() == other


@pytest.mark.parametrize("state", ["aborted", "missing"])
def test_an_abandoned_reservation_is_taken_over(file_store_url: str, state: str, tmp_path: Path) -> None:
    """A crash between reserving and creating the state, or between abort and release, frees it in time."""
    ws = Workspace(file_store_url)
    key = name_key("p", "n", "5.0")
    holder = _old_state(ws, "0.1") if state == "aborted" else None
    if holder is not None:
        registry.update_state(ws.store, holder.id, lambda st: setattr(st, "state", "aborted"))
    ws.store.put_conditional(key, (holder.id if holder else new_version_id()).encode(), if_match=None)
    if state == "missing":
        os.utime(tmp_path / "store" / key, (1000, 1000))
    assert Dataset.create("n", "p", "5.0", workspace=ws).version == "5.0"
