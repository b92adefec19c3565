"""Crash safety by injection: every commit path, crashed at every one of its writes, then checked and rerun.

A FaultyStore (fsmount/store/faults.py) raises SimulatedCrash at the N-th write, and at every
call after it, like a process killed there. For each N from 1 to the number of writes a clean
run makes: the store check (fsmount check) must find no broken invariant (a final state with a
missing record, tree or block; a record whose trees are missing...), then the operation run
again by a fresh "process" must complete, the store check must still pass, and the version must
hold exactly the intended content. With `torn`, the crashing write of an object also leaves its
first half at the key, as a server keeping the partial object of an interrupted PUT does.
"""

from __future__ import annotations

import os
import shutil
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from fsmount import Dataset
from fsmount.api.sync import sync
from fsmount.api.workspace import Workspace
from fsmount.cache.local_cache import ContentCache
from fsmount.check.store_check import check_store
from fsmount.commit import registry
from fsmount.format.records import READABLE_STATES
from fsmount.overlay.commit import commit_upper
from fsmount.overlay.merged import MergedView
from fsmount.overlay.upper import UpperLayer
from fsmount.store import open_store
from fsmount.store.base import ObjectStore
from fsmount.store.faults import FaultyStore, SimulatedCrash
from tests.helpers import hash_tree, write_tree

BS = 4096  # small blocks: the bigger files below span several
V1: dict[str, bytes | str] = {
    "a.txt": b"version one of a\n",
    "big.bin": bytes(range(256)) * 40,  # 10240 bytes: three blocks
    "sub/b.txt": b"b in sub\n",
    "sub/deep/c.txt": b"c, deep\n",
    "link": "->a.txt",
    "empty/": b"",
    "gone.txt": b"removed in the next version\n",
}
V2: dict[str, bytes | str] = {
    "a.txt": b"version two of a, longer than one\n",
    "big.bin": bytes(range(256)) * 40 + b"tail",  # the first blocks are shared with v1
    "sub/b.txt": b"b in sub\n",
    "sub/deep/c.txt": b"c, deep\n",
    "sub/new.txt": os.urandom(6000),
    "link": "->sub/b.txt",
    "empty/": b"",
    "empty2/": b"",
}


@dataclass
class Env:
    """One simulated machine: a store, its cache, and its XDG data folder (drafts).

    Each "process" gets its own Workspace; they share one store client and one ContentCache
    object (opening either costs a good part of a second; neither keeps state that matters).
    """

    url: str
    base: Path
    ctx: dict[str, Any] = field(default_factory=dict)
    cache: ContentCache | None = None
    _store: ObjectStore | None = None

    @property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(self.url)
        return self._store

    def workspace(self, store: ObjectStore | None = None) -> Workspace:
        ws = Workspace(store or self.store, cache_dir=self.base / "cache")
        if self.cache is None:
            self.cache = ws.cache
        else:
            ws.__dict__["cache"] = self.cache
        return ws

    def close(self) -> None:
        if self.cache is not None:
            self.cache.close()
            self.cache = None
        if self._store is not None:
            self._store.close()
            self._store = None


Op = Callable[[Env, Workspace], None]


def _newest_final(ws: Workspace, name: str) -> Dataset | None:
    states = [s for s in registry.list_states(ws.store)
              if s.project == "p" and s.name == name and s.state in READABLE_STATES]
    st = registry.newest(states)
    return None if st is None else Dataset(ws, st)


def _finish_drafts(ws: Workspace, name: str) -> int:
    """What a user does after a crash: `fsmount close` the drafts this machine was building."""
    n = 0
    for st in registry.list_states(ws.store):
        if st.project == "p" and st.name == name and st.state == "draft":
            ds = Dataset(ws, st)
            if ds._journal().exists():
                ds.finalize()
                n += 1
    return n


def _assert_clean(env: Env, when: str) -> None:
    report = check_store(env.store)
    assert report.ok, f"{when}: " + "; ".join(str(p) for p in report.problems)


def _content(ws: Workspace, version_id: str) -> dict[str, str]:
    ds = Dataset(ws, registry.read_state(ws.store, version_id))
    return hash_tree(Path(ds.get_local_copy()))


def sweep(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, new_url: Callable[[Path], str],
          prepare: Op, operation: Op, recover: Callable[[Env, Workspace], str],
          expected: dict[str, str], *, torn: bool = False,
          only: Callable[[int, int], bool] | None = None) -> int:
    """Run `operation` cleanly once (counting its writes), then crashed at each write in turn
    (or at those `only(n, total)` picks)."""

    def fresh(tag: str) -> Env:
        base = tmp_path / tag
        monkeypatch.setenv("XDG_DATA_HOME", str(base / "data"))
        env = Env(new_url(base), base)
        prepare(env, env.workspace())
        return env

    env = fresh("clean")
    counter = FaultyStore(env.store)
    operation(env, env.workspace(counter))
    total = counter.writes
    _assert_clean(env, "after a clean run")
    ws = env.workspace()
    assert _content(ws, recover(env, ws)) == expected
    env.close()
    assert total >= 5, total

    for n in range(1, total + 1):
        if only is not None and not only(n, total):
            continue
        env = fresh(f"crash-{n}")
        faulty = FaultyStore(env.store, crash_at=n, torn=torn)
        try:
            operation(env, env.workspace(faulty))
        except SimulatedCrash:
            pass
        else:  # identical blocks uploaded by two threads at once are one write or two
            assert faulty.writes < n <= total, f"no crash at write {n}, after {faulty.writes} writes"
        where = f"after a crash at write {n} of {total} ({faulty.crashed_on})"
        _assert_clean(env, where)
        ws = env.workspace()  # the next process, on the same machine
        try:
            version = recover(env, ws)
            assert _content(ws, version) == expected, where
            _assert_clean(env, f"{where}, then run again")
        finally:
            env.close()
        shutil.rmtree(env.base)
    return total


# -- the commit paths ---------------------------------------------------------------------------


def _file_url(base: Path) -> str:
    return f"file://{base / 'store'}"


def _sources(tmp_path: Path) -> tuple[Path, Path]:
    return write_tree(tmp_path / "v1", V1), write_tree(tmp_path / "v2", V2)


def _sync_paths(tmp_path: Path) -> tuple[Op, Op, Callable[[Env, Workspace], str], dict[str, str]]:
    v1, v2 = _sources(tmp_path)

    def prepare(env: Env, ws: Workspace) -> None:
        env.ctx["parent"] = sync(v1, project="p", name="s", block_size=BS, workspace=ws)[0].id

    def operation(env: Env, ws: Workspace) -> None:
        sync(v2, project="p", name="s", workspace=ws)

    def recover(env: Env, ws: Workspace) -> str:
        _finish_drafts(ws, "s")
        newest = _newest_final(ws, "s")
        if newest is None or newest.id == env.ctx["parent"]:
            newest = sync(v2, project="p", name="s", workspace=ws)[0]
        assert newest.parents == [env.ctx["parent"]]
        return newest.id

    return prepare, operation, recover, hash_tree(v2)


def test_sync_survives_a_crash_at_every_write(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    paths = _sync_paths(tmp_path)
    total = sweep(tmp_path, monkeypatch, _file_url, *paths)
    assert total >= 10


def test_sync_survives_torn_object_writes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A crash that leaves half an object at its key (s3rver, a proxy): the rerun replaces it."""
    sweep(tmp_path, monkeypatch, _file_url, *_sync_paths(tmp_path), torn=True)


def test_sync_on_s3_survives_a_crash_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, s3_store_url: str
) -> None:
    import boto3

    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])

    def new_url(base: Path) -> str:
        bucket = f"crash-{uuid.uuid4().hex[:12]}"
        client.create_bucket(Bucket=bucket)
        return f"s3://{bucket}/ds"

    # moto is slow: every other write point, and all of the last ones (record, flip, lock release).
    sweep(tmp_path, monkeypatch, new_url, *_sync_paths(tmp_path), torn=True,
          only=lambda n, total: n % 2 == 1 or n > total - 4)


def test_create_add_close_survives_a_crash_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, _ = _sources(tmp_path)
    extra = write_tree(tmp_path / "extra", {"a.txt": b"replaced a\n", "more/x.bin": os.urandom(9000),
                                            "more/l": "->x.bin", "more/e/": b""})
    expected = {**hash_tree(v1), **{f"more/{k}" if not k.startswith("a.") else k: v
                                    for k, v in hash_tree(extra / "more").items()},
                "a.txt": hash_tree(extra)["a.txt"]}
    del expected["gone.txt"]

    def prepare(env: Env, ws: Workspace) -> None:
        env.ctx["parent"] = sync(v1, project="p", name="c", block_size=BS, workspace=ws)[0].id

    def operation(env: Env, ws: Workspace) -> None:
        ds = Dataset.create("c", "p", parent_datasets=[env.ctx["parent"]], workspace=ws)
        ds.add_files(extra)
        ds.remove_files("gone.txt")
        ds.finalize(message="crash me")

    def recover(env: Env, ws: Workspace) -> str:
        _finish_drafts(ws, "c")
        newest = _newest_final(ws, "c")
        if newest is None or newest.id == env.ctx["parent"]:
            operation(env, ws)
            newest = _newest_final(ws, "c")
            assert newest is not None
        return newest.id

    sweep(tmp_path, monkeypatch, _file_url, prepare, operation, recover, expected)


def test_overlay_commit_survives_a_crash_at_every_write(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    v1, _ = _sources(tmp_path)
    ref = tmp_path / "ref"
    shutil.copytree(v1, ref, symlinks=True)
    # What the overlay does, on the reference folder.
    (ref / "new.txt").write_bytes(b"new in the overlay\n")
    (ref / "a.txt").write_bytes(b"version one of a\nappended\n")
    os.rename(ref / "sub", ref / "moved")
    os.unlink(ref / "gone.txt")
    os.mkdir(ref / "made")
    (ref / "made" / "m.bin").write_bytes(b"m" * 5000)
    os.symlink("made/m.bin", ref / "l2")
    expected = hash_tree(ref)

    def prepare(env: Env, ws: Workspace) -> None:
        ds = sync(v1, project="p", name="o", block_size=BS, workspace=ws)[0]
        upper = UpperLayer(env.base / "overlay")
        upper.bind(ds.id, ds.record.root)
        view = MergedView(upper, ws.reader, ds.record.root)
        fh = view.create("new.txt", 0o644)
        view.write(fh, 0, b"new in the overlay\n")
        view.release(fh)
        fh = view.open("a.txt", os.O_WRONLY)
        view.write(fh, len(b"version one of a\n"), b"appended\n")
        view.release(fh)
        view.rename("sub", "moved")
        view.unlink("gone.txt")
        view.mkdir("made", 0o755)
        fh = view.create("made/m.bin", 0o644)
        view.write(fh, 0, b"m" * 5000)
        view.release(fh)
        view.symlink("l2", "made/m.bin")
        upper.close()
        env.ctx["parent"] = ds.id

    def operation(env: Env, ws: Workspace) -> None:
        upper = UpperLayer(env.base / "overlay")
        try:
            commit_upper(upper, ws, message="overlay")
        finally:
            upper.close()

    def recover(env: Env, ws: Workspace) -> str:
        upper = UpperLayer(env.base / "overlay")
        try:
            if upper.base == env.ctx["parent"]:
                result = commit_upper(upper, ws, message="overlay")
                assert result.record is not None
            assert upper.is_empty() and upper.base != env.ctx["parent"]
            return str(upper.base)
        finally:
            upper.close()

    sweep(tmp_path, monkeypatch, _file_url, prepare, operation, recover, expected)
