"""sync and add record every source directory's mode and mtime, as they are (issue 9)."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, run_json

MTIME = 1_600_000_000_123_456_789


def _source(root: Path) -> Path:
    """private/ 0700 (with a file), shared/deep/ 0750 and 0711, empty/ 0705; odd mtimes."""
    (root / "private").mkdir(parents=True)
    (root / "private" / "secret.txt").write_text("s")
    (root / "shared" / "deep").mkdir(parents=True)
    (root / "shared" / "deep" / "f.txt").write_text("f")
    (root / "empty").mkdir()
    for rel, mode in (("private", 0o700), ("shared", 0o750), ("shared/deep", 0o711), ("empty", 0o705)):
        os.chmod(root / rel, mode)
        os.utime(root / rel, ns=(MTIME, MTIME + len(rel)))
    return root


def _modes(rows: list[dict[str, object]]) -> dict[str, int]:
    return {str(r["path"]): int(str(r["mode"]), 8) for r in rows if r["kind"] == "dir"}


WANT = {"private": 0o700, "shared": 0o750, "shared/deep": 0o711, "empty": 0o705}


def test_sync_stores_directory_modes_and_mtimes(store_url: str, tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    res = run_json("sync", "--folder", str(src), "--project", "p", "--name", "d", "--store", store_url)
    assert _modes(run_json("ls", res["id"], "-r", "--store", store_url)["entries"]) == WANT
    ds = Dataset.get(ref=res["id"], workspace=Workspace(store_url))
    mtimes = {p: e.mtime_ns for p, e in ds.iter_entries() if p in WANT}
    assert mtimes == {p: MTIME + len(p) for p in WANT}

    out = tmp_path / "copy"
    run_cli("get", res["id"], "--copy", str(out), "--store", store_url)
    assert {p: stat.S_IMODE(os.stat(out / p).st_mode) for p in WANT} == WANT

    # A mode change alone is a new version too, and unchanged directories keep theirs.
    os.chmod(src / "shared", 0o700)
    res2 = run_json("sync", "--folder", str(src), "--project", "p", "--name", "d", "--store", store_url)
    ls2 = run_json("ls", res2["id"], "-r", "--store", store_url)["entries"]
    assert _modes(ls2) == {**WANT, "shared": 0o700}


def test_a_0700_folder_stays_private_on_a_mount(
    file_store_url: str, tmp_path: Path, require_fuse: None
) -> None:
    src = _source(tmp_path / "src")
    res = run_json("sync", "--folder", str(src), "--project", "p", "--name", "d", "--store", file_store_url)
    with cli_mount(res["id"], tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        got = {p: stat.S_IMODE(os.stat(mnt / p).st_mode) for p in WANT}
    assert got == WANT


def test_add_records_the_destination_folder_and_implicit_parents_get_0755(
    store_url: str, tmp_path: Path
) -> None:
    src = _source(tmp_path / "src")
    os.chmod(src, 0o701)
    run_json("create", "--project", "p", "--name", "d", "--store", store_url)
    run_json("add", str(src), "--dataset-folder", "x/y", "--store", store_url)
    vid = run_json("close", "--store", store_url)["id"]
    modes = _modes(run_json("ls", vid, "-r", "--store", store_url)["entries"])
    assert modes == {"x": 0o755, "x/y": 0o701, **{f"x/y/{p}": m for p, m in WANT.items()}}


def test_sync_into_a_dataset_folder_records_that_folder(file_store_url: str, tmp_path: Path) -> None:
    src = _source(tmp_path / "src")
    os.chmod(src, 0o750)
    ws = Workspace(file_store_url)
    ds = Dataset.create("d", "p", workspace=ws)
    ds.sync_folder(src, dataset_path="a/b")
    ds.finalize()
    modes = {p: e.mode for p, e in ds.iter_entries() if p in ("a", "a/b", "a/b/private")}
    assert modes == {"a": 0o755, "a/b": 0o750, "a/b/private": 0o700}


@pytest.mark.parametrize("recursive", [True, False])
def test_add_counts_entries_not_folders(file_store_url: str, tmp_path: Path, recursive: bool) -> None:
    src = _source(tmp_path / "src")
    run_json("create", "--project", "p", "--name", "d", "--store", file_store_url)
    args = [] if recursive else ["--non-recursive"]
    staged = run_json("add", str(src), *args, "--store", file_store_url)["staged"]
    assert staged == (3 if recursive else 1)  # two files and the empty folder; non-recursive: the folder
