"""gc against drafts and writers: strict grace periods, stale drafts, and locks that are lost (issue 9)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.sync import gc
from fsmount.api.workspace import Workspace
from fsmount.commit import gc as gc_mod
from fsmount.commit import locks, registry
from fsmount.commit.drafts import Drafts
from fsmount.commit.locks import LockLost, writer_lock
from fsmount.commit.uploader import Uploader, source_file
from fsmount.errors import UsageError
from fsmount.format.hashing import record_key, state_key
from fsmount.store.faults import FaultyStore
from tests.fs_helpers import wait_until
from tests.helpers import count_objects, hash_tree, run_cli, run_json

DAY = 86400.0


def _age_state(ws: Workspace, draft_id: str, when: float) -> None:
    """Make a draft's state look written at `when` (update_state would stamp `updated` now)."""
    st = registry.read_state(ws.store, draft_id)
    st.created = st.updated = when
    ws.store.put_conditional(state_key(draft_id), st.encode(), if_match=st.etag)


def _age_objects(store_root: Path, when: float) -> None:
    for dirpath, _, names in os.walk(store_root / "objects"):
        for n in names:
            os.utime(os.path.join(dirpath, n), (when, when))


def _uploaded_draft(ws: Workspace, tmp: Path, name: str, files: dict[str, bytes]) -> Dataset:
    src = tmp / f"src-{name}"
    src.mkdir()
    for rel, data in files.items():
        (src / rel).write_bytes(data)
    ds = Dataset.create(name, "p", workspace=ws)
    ds.add_files(src)
    ds.upload()
    return ds


# -- 1. grace periods -----------------------------------------------------------------------------


@pytest.mark.parametrize("bad", ["-1h", "nan", "inf", "-5", "1x", "", "1e400", "h", "1h30m", "nanh"])
def test_gc_refuses_a_bad_grace_in_one_line(file_store_url: str, bad: str) -> None:
    proc = run_cli("gc", "--grace", bad, "--store", file_store_url, check=False)
    assert proc.returncode == 2, proc.stderr
    assert len(proc.stderr.strip().splitlines()) == 1 and "invalid duration" in proc.stderr


@pytest.mark.parametrize("good", ["90s", "30m", "1h", "2d", "0", "5", "1.5h"])
def test_gc_accepts_durations(file_store_url: str, good: str) -> None:
    assert run_json("gc", "--grace", good, "--dry-run", "--store", file_store_url)["deleted"] == 0


@pytest.mark.parametrize("grace", [-3600.0, float("nan"), float("inf"), float("-inf")])
def test_gc_api_refuses_a_bad_grace(file_store_url: str, grace: float) -> None:
    with pytest.raises(UsageError):
        gc(Workspace(file_store_url), grace=grace)


def test_negative_or_nan_grace_never_deletes_an_open_drafts_blocks(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    ds = _uploaded_draft(ws, tmp_path, "d", {"a.bin": os.urandom(3000), "b.bin": os.urandom(3000)})
    assert count_objects(store)[0] == 2
    for bad in ("-1h", "nan"):
        assert run_cli("gc", "--grace", bad, "--store", ws.store_url, check=False).returncode == 2
    assert run_json("gc", "--grace", "0", "--store", ws.store_url)["deleted"] == 0  # a live draft
    assert count_objects(store)[0] == 2
    ds.finalize()
    assert ds.verify_dataset_hash() == []


# -- 2. stale drafts -------------------------------------------------------------------------------


def test_a_stale_draft_is_shown_as_such_and_does_not_hold_gc_back(tmp_path: Path) -> None:
    """A killed sync's orphan draft: listed stale, gc frees garbage and its blocks, close still works."""
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    orphan = _uploaded_draft(ws, tmp_path, "orphan", {"a.bin": os.urandom(5000), "b.bin": os.urandom(7000)})
    junk = _uploaded_draft(ws, tmp_path, "junk", {"j.bin": os.urandom(4000)})
    junk.abort()
    live = Dataset.create("live", "p", workspace=ws)
    _age_state(ws, orphan.id, 1000.0)
    _age_objects(store, 2000.0)
    assert count_objects(store)[0] == 3

    rows = {r["id"]: r for r in run_json("list", "--store", ws.store_url)["datasets"]}
    assert rows[orphan.id]["stale"] is True and rows[live.id]["stale"] is False
    text = run_cli("list", "--store", ws.store_url).stdout
    line = next(ln for ln in text.splitlines() if orphan.id in ln)
    assert "draft (stale, no writer since 1970-01-01" in line
    assert "stale" not in next(ln for ln in text.splitlines() if live.id in ln)
    assert run_json("info", orphan.id, "--store", ws.store_url)["stale"] is True
    assert "(stale, no writer since" in run_cli("info", orphan.id, "--store", ws.store_url).stdout

    # The orphan (created long ago) no longer holds the cutoff back; the live draft (created now) does not
    # protect objects older than itself. Everything unreferenced and old goes: the junk and the orphan's.
    res = run_json("gc", "--grace", "1h", "--store", ws.store_url)
    assert res["deleted"] == 3 and res["stale_drafts"] == 1
    assert count_objects(store)[0] == 0

    # The orphan's writer comes back (another process): close re-uploads what gc took.
    run_cli("close", "--id", orphan.id, "--store", ws.store_url)
    assert Dataset.get(ref=orphan.id, workspace=ws).verify_dataset_hash() == []
    out = tmp_path / "copy"
    run_cli("get", orphan.id, "--copy", str(out), "--store", ws.store_url)
    assert hash_tree(out) == hash_tree(tmp_path / "src-orphan")


def test_a_draft_named_by_a_fresh_writer_lock_is_not_stale(tmp_path: Path) -> None:
    ws = Workspace(f"file://{tmp_path / 'store'}")
    ds = Dataset.create("d", "p", workspace=ws)
    _age_state(ws, ds.id, 1000.0)
    assert Dataset.get(ref=ds.id, only_final=False, workspace=ws).stale
    with writer_lock(ws.store, draft=ds.id):
        assert not Dataset.get(ref=ds.id, only_final=False, workspace=ws).stale
        rows = run_json("list", "--store", ws.store_url)["datasets"]
        assert [r["stale"] for r in rows] == [False]
    with writer_lock(ws.store):  # a lock naming no draft keeps nothing live
        assert Dataset.get(ref=ds.id, only_final=False, workspace=ws).stale


def test_upload_marks_its_draft_live_when_it_ends(tmp_path: Path) -> None:
    ws = Workspace(f"file://{tmp_path / 'store'}")
    ds = Dataset.create("d", "p", workspace=ws)
    _age_state(ws, ds.id, 1000.0)
    (tmp_path / "f").write_bytes(b"x" * 100)
    ds.add_files(tmp_path / "f")
    assert ds.refresh().stale
    ds.upload()
    assert not ds.refresh().stale


def test_a_stale_draft_is_aborted_from_another_machine(tmp_path: Path) -> None:
    ws = Workspace(f"file://{tmp_path / 'store'}")
    ds = _uploaded_draft(ws, tmp_path, "orphan", {"a.bin": b"a" * 100})
    _age_state(ws, ds.id, 1000.0)
    other = dict(os.environ, XDG_DATA_HOME=str(tmp_path / "elsewhere"))  # no staging folder there
    assert run_json("abort", ds.id, "--store", ws.store_url, env=other)["state"] == "aborted"
    assert ds.refresh().state == "aborted"


# -- 4. a lost lock stops gc and writers --------------------------------------------------------------


def _drop_locks(store_root: Path, kind: str) -> None:
    for p in (store_root / "locks").glob(f"{kind}-*"):
        p.unlink()


def test_gc_stops_deleting_once_its_lock_is_gone(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    junk = _uploaded_draft(ws, tmp_path, "junk", {f"{i}.bin": os.urandom(500 + i) for i in range(6)})
    junk.abort()
    _age_objects(store, 2000.0)
    monkeypatch.setattr(gc_mod, "DELETE_BATCH", 1)

    def steal(op: str, key: str) -> bool:  # another gc took our lock for stale, at the first delete
        if op == "delete" and key.startswith("objects/"):
            _drop_locks(store, "gc")
        return False

    with pytest.raises(LockLost) as e:
        gc_mod.gc(FaultyStore(ws.store, crash_on=steal), ws.reader, grace=0)
    assert e.value.exit_code == 4
    assert count_objects(store)[0] == 5  # the batch before the loss went; nothing after it


def test_close_stops_before_the_record_once_its_lock_is_gone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    src = tmp_path / "src"
    src.mkdir()
    (src / "a.bin").write_bytes(os.urandom(3000))
    ds = Dataset.create("d", "p", workspace=ws)
    ds.add_files(src)

    def steal(op: str, key: str) -> bool:  # the lock is removed while the blocks upload
        if op == "put" and key.startswith("objects/"):
            _drop_locks(store, "writer")
        return False

    doomed = Dataset(Workspace(FaultyStore(ws.store, crash_on=steal)), ds._state)
    with pytest.raises(LockLost):
        doomed.finalize()
    assert not ws.store.exists(record_key(ds.id)) and ds.refresh().state == "draft"
    ds.finalize()  # with a lock it holds, the same draft completes
    assert ds.refresh().state == "final" and ds.verify_dataset_hash() == []


def test_close_stops_before_the_state_flip_once_its_lock_is_gone(tmp_path: Path) -> None:
    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    (tmp_path / "a.bin").write_bytes(os.urandom(3000))
    ds = Dataset.create("d", "p", workspace=ws)
    ds.add_files(tmp_path / "a.bin")

    def steal(op: str, key: str) -> bool:  # lost right after the record was written
        if op == "put" and key == record_key(ds.id):
            _drop_locks(store, "writer")
        return False

    with pytest.raises(LockLost):
        Dataset(Workspace(FaultyStore(ws.store, crash_on=steal)), ds._state).finalize()
    assert ds.refresh().state == "draft"


def test_a_failed_refresh_marks_the_lock_lost_and_stops_the_uploader(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    ws = Workspace(f"file://{tmp_path / 'store'}")
    monkeypatch.setattr(locks, "REFRESH_EVERY", 0.01)
    (tmp_path / "f").write_bytes(os.urandom(1000))
    with writer_lock(ws.store) as lock:
        ws.store.delete(lock.key)  # as a gc that took it for stale does
        wait_until(lambda: lock.lost, what="the refresh to notice")
        with pytest.raises(LockLost):
            lock.check()
        up = Uploader(ws.store, "0" * 32, lock=lock)
        with pytest.raises(LockLost):
            list(up.upload([source_file("f", str(tmp_path / "f"))]))
    assert count_objects(tmp_path / "store")[0] == 0


def test_the_current_draft_pointer_survives_concurrent_writers(tmp_path: Path) -> None:
    """Processes creating drafts at once each set their store's pointer: no writer fails (they shared
    one temporary file name, and the second rename raised FileNotFoundError) and none is lost."""
    import multiprocessing

    ctx = multiprocessing.get_context("fork")
    procs = [ctx.Process(target=_set_pointers, args=(tmp_path, i)) for i in range(6)]
    for p in procs:
        p.start()
    for p in procs:
        p.join(60)
        assert p.exitcode == 0
    for i in range(6):
        assert Drafts(tmp_path, f"file:///store{i}").current() == f"{i:032x}"


def _set_pointers(home: Path, i: int) -> None:
    d = Drafts(home, f"file:///store{i}")
    for _ in range(200):
        d.set_current(f"{i:032x}")
