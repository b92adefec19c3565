"""Rename and move a dataset: every version follows, old REFs say the new name, races lose nothing."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit import aliases, lifecycle, registry
from fsmount.errors import ConflictError, NotFoundError
from fsmount.store.base import ObjectStore
from fsmount.store.faults import FaultyStore, SimulatedCrash
from tests.helpers import run_cli, run_json, write_tree


def _versions(ws: Workspace, tmp: Path, project: str, name: str, n: int) -> list[Dataset]:
    out: list[Dataset] = []
    for i in range(n):
        ds = Dataset.create(name, project, parent_datasets=[out[-1].id] if out else [], workspace=ws)
        ds.add_files(write_tree(tmp / f"{name}-{i}", {f"f{i}.txt": f"v{i}"}))
        ds.finalize()
        out.append(ds)
    return out


def _snapshot(ws: Workspace) -> dict[str, tuple[str, str, str, str, tuple[str, ...]]]:
    return {s.id: (s.project, s.name, s.version, s.state, s.tags) for s in registry.list_states(ws.store)}


def test_rename_and_move_through_cli_and_api(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    vs = _versions(ws, tmp_path, "cv", "pets", 2)
    draft = Dataset.create("pets", "cv", parent_datasets=[vs[-1].id], workspace=ws)
    out = run_json("rename", "--store", store_url, "--project", "cv", "--name", "pets",
                   "--new-name", "animals")
    assert out["name"] == "animals"
    states = {s.id: s for s in registry.list_states(ws.store)}
    assert {(states[d.id].project, states[d.id].name) for d in [*vs, draft]} == {("cv", "animals")}
    assert Dataset.get(ref="cv/animals@1.0.1", workspace=ws).id == vs[1].id
    proc = run_cli("info", "--store", store_url, "cv/pets", check=False)
    assert proc.returncode == 1 and "renamed to 'cv/animals'" in proc.stderr
    with pytest.raises(NotFoundError, match="renamed to 'cv/animals'"):
        Dataset.get(ref="cv/pets@1.0.0", workspace=ws)
    # content is unchanged: the record keeps its tree; a new version continues the lineage
    assert Dataset.get(ref="cv/animals", workspace=ws).list_files() == ["f0.txt", "f1.txt"]
    draft.add_files(write_tree(tmp_path / "more", {"f2.txt": "v2"}))
    draft.finalize()
    assert Dataset.get(ref="cv/animals", workspace=ws).version == "1.0.2"
    Dataset.move_to_project("zoo/mammals", "cv", "animals", workspace=ws)
    assert {d.project for d in Dataset.list_versions(dataset_name="animals", workspace=ws)} == {"zoo/mammals"}
    with pytest.raises(NotFoundError, match="renamed to 'zoo/mammals/animals'"):
        Dataset.get(ref="cv/pets", workspace=ws)  # followed through both aliases
    run_cli("move", "--store", store_url, "--project", "zoo/mammals", "--name", "animals",
            "--new-project", "cv")
    Dataset.rename("pets", "cv", "animals", workspace=ws)  # back to the first name: it has versions again
    assert Dataset.get(ref="cv/pets", workspace=ws).version == "1.0.2"
    # the version strings moved with the versions: a new version of the renamed dataset gets a free one
    assert Dataset.create("pets", "cv", workspace=ws).version == "1.0.3"
    run_cli("check", "--store", store_url)  # the store's invariants hold after all that


def test_rename_onto_an_existing_name_or_unknown_is_refused_and_changes_nothing(
    store_url: str, tmp_path: Path
) -> None:
    ws = Workspace(store_url)
    _versions(ws, tmp_path, "cv", "pets", 1)
    _versions(ws, tmp_path, "cv", "cars", 1)
    before, keys = _snapshot(ws), sorted(i.key for i in ws.store.list(""))
    for args in (("rename", "--project", "cv", "--name", "pets", "--new-name", "cars"),
                 ("rename", "--project", "cv", "--name", "nope", "--new-name", "x"),
                 ("rename", "--project", "cv", "--name", "pets", "--new-name", "bad/name"),
                 ("move", "--project", "cv", "--name", "pets", "--new-project", "cv")):
        proc = run_cli(*args, "--store", store_url, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    assert _snapshot(ws) == before and sorted(i.key for i in ws.store.list("")) == keys
    with pytest.raises(ConflictError, match="exists already"):
        Dataset.rename("cars", "cv", "pets", workspace=ws)


class TagDuringRename(FaultyStore):
    """The real store; just before the rename's first state write, another writer tags that version."""

    def __init__(self, inner: ObjectStore, other: ObjectStore) -> None:
        super().__init__(inner)
        self.other = other
        self.fired = False

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        if key.startswith("state/") and if_match is not None and not self.fired:
            self.fired = True
            lifecycle.add_tags(self.other, key.removeprefix("state/"), ["landed-meanwhile"])
            lifecycle.publish(self.other, key.removeprefix("state/"))
        return super().put_conditional(key, data, if_match)


def test_a_tag_and_a_publish_between_the_renames_read_and_write_both_land(
    store_url: str, tmp_path: Path
) -> None:
    ws = Workspace(store_url)
    (v,) = _versions(ws, tmp_path, "cv", "pets", 1)
    racing = TagDuringRename(ws.store, Workspace(store_url).store)
    aliases.rename_dataset(racing, "cv", "pets", "cv", "animals")
    assert racing.fired
    st = registry.read_state(ws.store, v.id)
    assert (st.project, st.name, st.state) == ("cv", "animals", "published")
    assert "landed-meanwhile" in st.tags


def test_rename_racing_tags_from_another_thread_keeps_both(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    vs = _versions(ws, tmp_path, "cv", "pets", 3)
    tags = [f"t{i}" for i in range(12)]
    start = threading.Barrier(2)
    errors: list[BaseException] = []

    def tagger() -> None:
        other = Workspace(store_url).store
        start.wait()
        try:
            for t in tags:
                for v in vs:
                    lifecycle.add_tags(other, v.id, [t])
        except BaseException as e:
            errors.append(e)

    th = threading.Thread(target=tagger)
    th.start()
    start.wait()
    aliases.rename_dataset(Workspace(store_url).store, "cv", "pets", "cv", "animals")
    th.join()
    assert not errors
    for v in vs:
        st = registry.read_state(ws.store, v.id)
        assert (st.project, st.name) == ("cv", "animals")
        assert set(tags) <= set(st.tags)


def test_a_rename_cut_short_is_finished_by_running_it_again(file_store_url: str, tmp_path: Path) -> None:
    ws = Workspace(file_store_url)
    vs = _versions(ws, tmp_path, "cv", "pets", 3)
    second_state = f"state/{vs[1].id}"
    crashing = FaultyStore(ws.store, crash_on=lambda op, key: op == "put_conditional" and key == second_state)
    with pytest.raises(SimulatedCrash):
        aliases.rename_dataset(crashing, "cv", "pets", "cv", "animals")
    names = {registry.read_state(ws.store, v.id).name for v in vs}
    assert names == {"pets", "animals"}  # half-way: the old name still resolves to what is left there
    aliases.rename_dataset(ws.store, "cv", "pets", "cv", "animals")
    assert {registry.read_state(ws.store, v.id).name for v in vs} == {"animals"}
    assert Dataset.create("pets", "cv", workspace=ws).version == "1.0.0"  # the old strings were given back
