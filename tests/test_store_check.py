"""`fsmount check`: every invariant it checks, broken one at a time on a real store (file:// and moto)."""

from __future__ import annotations

import os
import time
from pathlib import Path

import msgpack
import pytest

from fsmount import Dataset
from fsmount.api.sync import sync
from fsmount.api.workspace import Workspace
from fsmount.check.store_check import CheckReport, check_store
from fsmount.format.hashing import object_key, record_key, state_key
from fsmount.format.records import VersionState
from fsmount.store.base import ObjectStore
from tests.helpers import run_cli, run_json, write_tree

FILES: dict[str, bytes | str] = {
    "a.txt": b"alpha\n",
    "sub/b.bin": os.urandom(10000),
    "sub/deep/c": b"c",
    "link": "->a.txt",
    "empty/": b"",
}


@pytest.fixture
def ws(store_url: str, tmp_path: Path) -> Workspace:
    return Workspace(store_url, cache_dir=tmp_path / "cache")


def _two_versions(ws: Workspace, tmp_path: Path) -> tuple[Dataset, Dataset]:
    src = write_tree(tmp_path / "src", FILES)
    v1 = sync(src, project="p", name="n", block_size=4096, workspace=ws)[0]
    (src / "a.txt").write_bytes(b"alpha, again\n")
    v2 = sync(src, project="p", name="n", workspace=ws)[0]
    return v1, v2


def _messages(report: CheckReport) -> list[str]:
    return [str(p) for p in report.problems]


def _blocks(ws: Workspace, ds: Dataset) -> list[bytes]:
    return [b if isinstance(b, bytes) else b[0] for p, e in ds.iter_entries() if hasattr(e, "blocks")
            for b in e.blocks]


def test_a_clean_store_checks_clean(ws: Workspace, tmp_path: Path) -> None:
    _two_versions(ws, tmp_path)
    report = check_store(ws.store)
    assert report.ok, _messages(report)
    s = report.stats
    assert s.states == 2 and s.by_state == {"final": 2} and s.records == 2
    assert s.blocks == 6 and s.orphans == 0  # a.txt twice, b.bin's three, c and report.orphans == []
    assert s.objects == s.trees + s.blocks
    assert check_store(ws.store, read_data=True).ok


def test_missing_and_short_blocks(ws: Workspace, tmp_path: Path) -> None:
    _, v2 = _two_versions(ws, tmp_path)
    missing, short = _blocks(ws, v2)[:2]
    ws.store.delete(object_key(missing))
    data = ws.store.get(object_key(short))
    _replace(ws.store, object_key(short), data[:-1])
    found = _messages(check_store(ws.store))
    assert any(m.startswith(object_key(missing)) and "is missing" in m for m in found), found
    assert any(m.startswith(object_key(short)) and f"is {len(data) - 1} bytes, not {len(data)}" in m
               for m in found), found
    assert len(found) == 2


def test_a_flipped_byte_needs_read_data(ws: Workspace, tmp_path: Path) -> None:
    _, v2 = _two_versions(ws, tmp_path)
    h = _blocks(ws, v2)[0]
    data = bytearray(ws.store.get(object_key(h)))
    data[0] ^= 1
    _replace(ws.store, object_key(h), bytes(data))
    assert check_store(ws.store).ok  # same size: only reading it tells
    found = _messages(check_store(ws.store, read_data=True))
    assert found == [f"{object_key(h)}: block of version {v2.id}: {_path_of(ws, v2, h)} (block 0)"
                     " is damaged: its bytes do not hash to its name"]


def test_missing_and_damaged_trees(ws: Workspace, tmp_path: Path) -> None:
    _, v2 = _two_versions(ws, tmp_path)
    sub = next(e.tree for p, e in v2.iter_entries() if p == "sub")
    ws.store.delete(object_key(sub))
    _replace(ws.store, object_key(v2.record.root), b"not a tree")
    found = _messages(check_store(ws.store))
    assert any(m.startswith(f"{object_key(sub)}: tree of version ") and m.endswith(": sub is missing")
               for m in found), found  # v1 and v2 share it: either is named
    assert any(m.startswith(object_key(v2.record.root)) and "is damaged" in m for m in found), found


def test_bad_and_future_state_objects_are_reported_by_key(ws: Workspace, tmp_path: Path) -> None:
    _two_versions(ws, tmp_path)
    garbage, future = "0" * 32, "1" * 32
    ws.store.put_conditional(state_key(garbage), b"\x93garbage", if_match=None)
    ws.store.put_conditional(state_key(future), msgpack.packb({"format": 3, "type": "state", "id": future}),
                             if_match=None)
    report = check_store(ws.store)
    found = _messages(report)
    assert len(found) == 2, found
    assert found[0].startswith(f"{state_key(garbage)}: ")
    assert found[1].startswith(f"{state_key(future)}: ") and "newer fsmount" in found[1]
    assert report.stats.states == 2  # the good ones were still checked


def test_final_state_without_record_and_missing_parent(ws: Workspace, tmp_path: Path) -> None:
    v1, v2 = _two_versions(ws, tmp_path)
    ws.store.delete(record_key(v2.id))
    ws.store.delete(state_key(v1.id))
    ws.store.delete(record_key(v1.id))
    report = check_store(ws.store)
    missing = f"{state_key(v2.id)}: the state says final but {record_key(v2.id)} is missing"
    assert _messages(report) == [missing]
    # A missing parent is what `delete --force` leaves (the child keeps its full tree): a note, not damage.
    assert f"{state_key(v2.id)}: parent {v1.id} was deleted (delete --force)" in report.notes


def test_parent_cycles(ws: Workspace) -> None:
    a, b = "a" * 32, "b" * 32
    now = time.time()
    for me, parent in ((a, b), (b, a)):
        st = VersionState(id=me, project="p", name="n", version="1", parents=(parent,), state="draft",
                          tags=(), description="", created=now, updated=now, author="t")
        ws.store.put_conditional(state_key(me), st.encode(), if_match=None)
    found = _messages(check_store(ws.store))
    assert len(found) == 1 and "parent cycle" in found[0], found


def test_a_draft_record_needs_its_trees_but_not_its_blocks(ws: Workspace, tmp_path: Path) -> None:
    """After a crash between record and state flip, the record's trees exist (write order)."""
    from fsmount.store.faults import FaultyStore, SimulatedCrash

    (tmp_path / "f").write_bytes(b"draft data")
    ds = Dataset.create("d", "p", workspace=ws)
    ds.add_files(tmp_path / "f")
    flip = ("put_conditional", state_key(ds.id))
    with pytest.raises(SimulatedCrash):
        doomed = Workspace(FaultyStore(ws.store, crash_on=lambda op, k: (op, k) == flip))
        Dataset(doomed, ds._state).finalize()
    rec = ws.reader.record(ds.id)
    assert check_store(ws.store).ok
    ws.store.delete(object_key(rec.root))
    found = _messages(check_store(ws.store))
    assert found == [f"{object_key(rec.root)}: tree of version {ds.id}: is missing"]


def test_orphans_and_stale_locks_are_listed_not_problems(ws: Workspace, tmp_path: Path) -> None:
    _two_versions(ws, tmp_path)
    junk = os.urandom(777)
    from fsmount.format.hashing import digest

    ws.store.put(object_key(digest(junk)), junk)
    ws.store.put_conditional("locks/writer-" + "c" * 32, b"{}", if_match=None)
    if ws.store.url.startswith("file://"):
        old = time.time() - 3600
        os.utime(Path(ws.store.url[7:]) / "locks" / ("writer-" + "c" * 32), (old, old))
    report = check_store(ws.store)
    assert report.ok
    assert report.orphans == [object_key(digest(junk))]
    assert report.stats.orphans == 1 and report.stats.orphan_bytes == 777
    if ws.store.url.startswith("file://"):
        assert report.stale_locks == ["locks/writer-" + "c" * 32]


def test_cli_check(file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMOUNT_STORE", file_store_url)
    src = write_tree(tmp_path / "src", FILES)
    ref = run_json("sync", "--folder", str(src), "--project", "p", "--name", "n")["id"]
    out = run_cli("check")
    assert out.returncode == 0 and "no problems" in out.stdout and len(out.stdout.splitlines()) == 1
    assert run_json("check", "--read-data")["ok"] is True
    ws = Workspace(file_store_url)
    ds = Dataset.get(ref, workspace=ws)
    for h in _blocks(ws, ds)[:2]:
        ws.store.delete(object_key(h))
    out = run_cli("check", check=False)
    assert out.returncode == 1 and len(out.stdout.splitlines()) == 2 and out.stderr == ""
    report = run_json("check", check=False)
    assert report["ok"] is False and len(report["problems"]) == 2


def _replace(store: ObjectStore, key: str, data: bytes) -> None:
    """Overwrite an object behind the store's back (what damage or a hostile writer does)."""
    from fsmount.store.local import LocalStore
    from fsmount.store.s3 import S3Store

    if isinstance(store, LocalStore):
        (store.root / key).write_bytes(data)
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)


def _path_of(ws: Workspace, ds: Dataset, h: bytes) -> str:
    return next(p for p, e in ds.iter_entries() if hasattr(e, "blocks") and e.blocks and e.blocks[0] == h)
