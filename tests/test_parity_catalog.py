"""search / list_datasets, delete --entire-dataset, Dataset.get's clearml flags, set-description."""

from __future__ import annotations

from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.errors import NotFoundError, StateError
from tests.helpers import run_cli, run_json, write_tree


def _version(ws: Workspace, tmp: Path, project: str, name: str, files: dict[str, bytes | str],
             tags: list[str] = (), parents: list[str] = (), publish: bool = False) -> Dataset:  # type: ignore[assignment]
    ds = Dataset.create(name, project, parent_datasets=list(parents), dataset_tags=list(tags), workspace=ws)
    ds.add_files(write_tree(tmp / f"src-{ds.id}", files))
    ds.finalize(publish=publish)
    return ds


def test_search_cli_and_api(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    pets = _version(ws, tmp_path, "cv", "pets", {"a": "12345"}, tags=["gold"])
    cars = _version(ws, tmp_path, "cv/road", "cars", {"b": "1", "c": "22"})
    _version(ws, tmp_path, "nlp", "petitions", {"x": "x"}, tags=["gold"])
    draft = Dataset.create("pets", "cv", parent_datasets=[pets.id], workspace=ws)
    rows = Dataset.list_datasets(workspace=ws)
    assert {r["id"] for r in rows} == {pets.id, cars.id} | {r["id"] for r in rows if r["name"] == "petitions"}
    (row,) = [r for r in rows if r["id"] == pets.id]
    assert row == {"id": pets.id, "project": "cv", "name": "pets", "version": "1.0.0", "state": "final",
                   "tags": ["gold"], "created": pets._state.created, "files": 1, "bytes": 5}
    assert {r["id"] for r in Dataset.list_datasets("cv", workspace=ws)} == {pets.id, cars.id}  # subprojects
    assert {r["id"] for r in Dataset.list_datasets("cv", recursive_project_search=False, workspace=ws)} == {
        pets.id}
    names = {r["name"] for r in Dataset.list_datasets(partial_name="^pet", workspace=ws)}
    assert names == {"pets", "petitions"}
    assert {r["name"] for r in Dataset.list_datasets(tags=["gold"], partial_name="s$", workspace=ws)} == {
        "pets", "petitions"}
    assert [r["id"] for r in Dataset.list_datasets(ids=[cars.id[:8]], workspace=ws)] == [cars.id]
    every = Dataset.list_datasets("cv", "pets", only_completed=False, workspace=ws)
    assert [(r["id"], r["state"], r["files"]) for r in every] == [
        (pets.id, "final", 1), (draft.id, "draft", None)]
    out = run_json("search", "--store", store_url, "--project", "cv", "--name", "pe.s", "--tag", "gold")
    assert [r["id"] for r in out["datasets"]] == [pets.id]
    out = run_json("search", "--store", store_url, "--id", draft.id, "--all-states")
    assert [r["state"] for r in out["datasets"]] == ["draft"]
    text = run_cli("search", "--store", store_url, "--project", "cv/road").stdout
    assert cars.id in text and "cv/road/cars@1.0.0" in text
    proc = run_cli("search", "--store", store_url, "--name", "(", check=False)
    assert proc.returncode == 2 and "invalid name pattern" in proc.stderr


def test_delete_entire_dataset_then_what_gc_may_remove(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    v1 = _version(ws, tmp_path, "cv", "pets", {"own.bin": b"only here" * 1000, "shared": "same"})
    v2 = _version(ws, tmp_path, "cv", "pets", {"v2": "v2"}, parents=[v1.id])
    keep = _version(ws, tmp_path, "cv", "cars", {"shared": "same"})
    child = _version(ws, tmp_path, "cv", "bikes", {"b": "b"}, parents=[v2.id])
    before = {s.id for s in registry.list_states(ws.store)}
    proc = run_cli("delete", "--store", store_url, "--project", "cv", "--name", "pets", "--entire-dataset",
                   check=False)
    assert proc.returncode == 1 and "bikes" in proc.stderr and len(proc.stderr.splitlines()) == 1
    assert {s.id for s in registry.list_states(ws.store)} == before  # refused: nothing deleted
    Dataset.get(ref=child.id, workspace=ws).delete()
    out = run_json("delete", "--store", store_url, "--project", "cv", "--name", "pets", "--entire-dataset")
    assert sorted(out["deleted"]) == sorted([v1.id, v2.id])
    # own.bin's block, v2's file and the trees of both: "shared" is still needed by cars
    assert out["unreachable_objects"] >= 4 and out["unreachable_bytes"] >= 9000
    assert {s.id for s in registry.list_states(ws.store)} == {keep.id}
    assert ws.store.head(f"versions/{v1.id}") is None
    gc = run_json("gc", "--store", store_url, "--grace", "0")
    assert gc["deleted"] >= out["unreachable_objects"]
    assert Dataset.get(ref="cv/cars", workspace=ws).get_local_copy()
    for args in (("--project", "cv", "--name", "pets", "--entire-dataset"), ("--project", "cv"),
                 ("--entire-dataset", keep.id)):
        proc = run_cli("delete", "--store", store_url, *args, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert {s.id for s in registry.list_states(ws.store)} == {keep.id}


def test_get_only_published_auto_create_writable_copy(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    pub = _version(ws, tmp_path, "cv", "pets", {"a": "1"}, tags=["t"], publish=True)
    fin = _version(ws, tmp_path, "cv", "pets", {"b": "2"}, tags=["t"], parents=[pub.id])
    assert Dataset.get(dataset_project="cv", dataset_name="pets", workspace=ws).id == fin.id
    got = Dataset.get(dataset_project="cv", dataset_name="pets", only_published=True, workspace=ws)
    assert got.id == pub.id
    assert Dataset.get(dataset_tags=["t"], only_published=True, workspace=ws).id == pub.id
    assert Dataset.get(ref="tag:t", only_published=True, workspace=ws).id == pub.id
    with pytest.raises(StateError, match="not published"):
        Dataset.get(dataset_id=fin.id, only_published=True, workspace=ws)
    with pytest.raises(NotFoundError):
        Dataset.get(dataset_project="cv", dataset_name="new", workspace=ws)
    made = Dataset.get(dataset_project="cv", dataset_name="new", auto_create=True, workspace=ws)
    assert (made.state, made.project, made.name, made.parents) == ("draft", "cv", "new", [])
    assert Dataset.get(dataset_project="cv", dataset_name="pets", auto_create=True, workspace=ws).id == fin.id
    copy = Dataset.get(dataset_project="cv", dataset_name="pets", writable_copy=True, workspace=ws)
    assert copy.state == "draft" and copy.parents == [fin.id] and copy.version == "1.0.2"
    copy.add_files(write_tree(tmp_path / "c", {"c": "3"}))
    copy.finalize()
    assert sorted(copy.list_files()) == ["a", "b", "c"]


def test_set_description_cli(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    v = _version(ws, tmp_path, "cv", "pets", {"a": "1"})
    run_cli("set-description", "--store", store_url, "cv/pets", "cats and dogs, 2026")
    assert run_json("info", "--store", store_url, v.id)["description"] == "cats and dogs, 2026"
    proc = run_cli("set-description", "--store", store_url, "cv/nope", "x", check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1
