"""Crash safety of close, and conditional writes under real concurrent processes."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import time
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.check.store_check import check_store
from fsmount.commit import registry
from fsmount.format.hashing import record_key, state_key
from fsmount.format.records import VersionState
from fsmount.store.faults import FaultyStore, SimulatedCrash
from tests.helpers import FSMOUNT, count_objects, hash_tree, run_cli, run_json


def test_close_killed_mid_upload_is_finished_by_running_it_again(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = tmp_path / "store"
    monkeypatch.setenv("FSMOUNT_STORE", f"file://{store}")
    files = tmp_path / "files"
    files.mkdir()
    for i in range(3000):
        (files / f"f{i:04}.bin").write_bytes(os.urandom(16 * 1024))
    draft = run_json("create", "--project", "p", "--name", "crash")["id"]
    run_cli("add", str(files))
    proc = subprocess.Popen(
        [*FSMOUNT, "close", "--quiet"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + 60
    while count_objects(store)[0] < 100 and time.monotonic() < deadline and proc.poll() is None:
        time.sleep(0.002)  # polling a condition, not a timing assumption
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    assert proc.returncode == -signal.SIGKILL, "close finished before it could be killed; grow the upload"
    uploaded = count_objects(store)[0]
    assert 100 <= uploaded < 3000

    # No reader sees the half-made version as final.
    listing = {d["id"]: d["state"] for d in run_json("list")["datasets"]}
    assert listing[draft] == "draft"
    assert run_cli("get", "p/crash", check=False).returncode != 0
    assert run_cli("get", draft, check=False).returncode != 0

    out = run_json("close")
    assert out["id"] == draft and out["state"] == "final" and out["files"] == 3000
    path = run_json("get", "p/crash")["path"]
    assert hash_tree(Path(path)) == hash_tree(files)


def _crash_at_state_flip(ws: Workspace, ds: Dataset) -> None:
    """Finalize `ds` in a "process" that dies at the state flip: after the record, before final."""
    flip = ("put_conditional", state_key(ds.id))
    faulty = FaultyStore(ws.store, crash_on=lambda op, key: (op, key) == flip)
    doomed = Workspace(faulty, cache_dir=ws.cache_dir)
    with pytest.raises(SimulatedCrash):
        Dataset(doomed, registry.read_state(ws.store, ds.id)).finalize()
    doomed.cache.close()
    assert ws.store.exists(record_key(ds.id)), "the crash came before the record was written"
    assert ds.refresh().state == "draft"


def test_close_of_a_draft_whose_record_exists_completes(tmp_path: Path) -> None:
    """A crash between writing the record and flipping the state: close reuses the record, flips it."""
    ws = Workspace(f"file://{tmp_path / 'store'}", cache_dir=tmp_path / "cache")
    (tmp_path / "a").write_text("a")
    ds = Dataset.create("rec", "p", workspace=ws)
    ds.add_files(tmp_path / "a")
    _crash_at_state_flip(ws, ds)
    written = ws.store.get(record_key(ds.id))
    assert check_store(ws.store).ok
    ds.finalize()
    assert ds.refresh().state == "final"
    assert ds.list_files() == ["a"]
    # The record of the interrupted finalize was reused as it was (its finalize time included),
    # not deleted and written again.
    assert ws.store.get(record_key(ds.id)) == written
    assert check_store(ws.store).ok


def _tag_in_parallel(ref: str, n: int) -> list[subprocess.Popen[str]]:
    return [
        subprocess.Popen(
            [*FSMOUNT, "tag", ref, "--add", f"t{i}", "--json"],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            stdin=subprocess.DEVNULL,
        )
        for i in range(n)
    ]


def test_concurrent_tag_changes_are_never_lost(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FSMOUNT_STORE", store_url)
    (tmp_path / "f").write_text("x")
    ref = run_json("sync", "--folder", str(tmp_path), "--project", "p", "--name", "tags")["id"]
    procs = _tag_in_parallel(ref, 6)
    told_to_retry = []
    for i, p in enumerate(procs):
        _, err = p.communicate(timeout=120)
        if p.returncode != 0:
            assert "try again" in err
            told_to_retry.append(f"t{i}")
    tags = set(run_json("info", ref)["tags"])
    assert tags == {f"t{i}" for i in range(6)} - set(told_to_retry)
    assert len(told_to_retry) < 6


def test_publish_racing_with_tagging_keeps_both(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A tag change reads the state, then `fsmount publish` (another process) changes it, then the
    tag change writes: its write must be refused (stale etag), re-read and re-applied, so both
    the publication and the tag survive. The interleaving is forced, not left to timing."""
    monkeypatch.setenv("FSMOUNT_STORE", store_url)
    (tmp_path / "f").write_text("x")
    ref = run_json("sync", "--folder", str(tmp_path), "--project", "p", "--name", "pub")["id"]
    ws = Workspace(store_url)
    attempts: list[str] = []

    def add_tag(st: VersionState) -> None:
        attempts.append(st.state)
        if len(attempts) == 1:  # between our read and our write, another process publishes
            run_cli("publish", ref)
        st.tags = (*st.tags, "a")

    registry.update_state(ws.store, ref, add_tag)
    assert attempts == ["final", "published"], "the stale write was not refused and retried"
    info = run_json("info", ref)
    assert info["state"] == "published" and info["tags"] == ["a"]
    ws.close()


def test_publish_and_tag_processes_at_once_keep_both(
    store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("FSMOUNT_STORE", store_url)
    (tmp_path / "f").write_text("x")
    ref = run_json("sync", "--folder", str(tmp_path), "--project", "p", "--name", "pub")["id"]
    pub = subprocess.Popen(
        [*FSMOUNT, "publish", ref], stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL
    )
    tag = subprocess.Popen(
        [*FSMOUNT, "tag", ref, "--add", "a"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        stdin=subprocess.DEVNULL,
    )
    assert pub.wait(120) == 0 and tag.wait(120) == 0
    info = json.loads(run_cli("info", ref, "--json").stdout)
    assert info["state"] == "published" and info["tags"] == ["a"]


def test_close_reuploads_blocks_collected_since_an_earlier_upload(tmp_path: Path) -> None:
    """gc may run between `upload` (one process) and `close` (another): close notices and repairs."""
    from fsmount.api.sync import gc
    from fsmount.commit import staging

    store = tmp_path / "store"
    ws = Workspace(f"file://{store}")
    (tmp_path / "data").mkdir()
    (tmp_path / "data" / "a.bin").write_bytes(os.urandom(5000))
    ds = Dataset.create("lost", "p", workspace=ws)
    ds.add_files(tmp_path / "data")
    ds.upload()
    assert count_objects(store)[0] == 1
    # Make the draft and its upload look a day old, so gc may collect the blocks.
    from fsmount.commit import registry

    registry.update_state(ws.store, ds.id, lambda st: setattr(st, "created", 100.0))
    for dirpath, _, names in os.walk(store / "objects"):
        for n in names:
            os.utime(os.path.join(dirpath, n), (50, 50))
    assert gc(ws, grace=0)["deleted"] == 1
    assert count_objects(store)[0] == 0
    staging.SESSION, saved = "another-process", staging.SESSION
    import fsmount.api.dataset as dsmod

    dsmod.SESSION = "another-process"
    try:
        ds.finalize()
    finally:
        staging.SESSION = saved
        dsmod.SESSION = saved
    assert ds.verify_dataset_hash() == []
