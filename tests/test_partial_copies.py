"""Partial copies (--part/--num-parts, --files), list REF --filter/--modified, compare, verify --folder."""

from __future__ import annotations

import hashlib
import json
import os
import random
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api.selection import part_of
from tests.helpers import hash_tree, run_cli, run_json, write_tree
from tests.test_cli import assert_one_line_error


@pytest.fixture
def env_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FSMOUNT_STORE", store_url)
    return store_url


def _files(seed: int = 7) -> dict[str, bytes | str]:
    rnd = random.Random(seed)
    files: dict[str, bytes | str] = {}
    for i in range(120):
        files[f"train/c{i % 7}/{i:04}.jpg"] = rnd.randbytes(rnd.randrange(0, 9000))
    files["labels.csv"] = b"id,label\n"
    files["notes/readme.txt"] = b"hello\n"
    files["link"] = "->labels.csv"
    files["empty/"] = ""
    return files


def test_parts_are_disjoint_cover_the_version_and_balance(env_store: str, tmp_path: Path) -> None:
    files = _files()
    vid = run_json("sync", "--folder", str(write_tree(tmp_path / "src", files)), "--project", "p",
                   "--name", "parts")["id"]
    whole = hash_tree(tmp_path / "src")
    parts = []
    for k in range(4):
        dest = tmp_path / f"part{k}"
        run_cli("get", vid, "--part", str(k), "--num-parts", "4", "--copy", str(dest))
        parts.append(hash_tree(dest))
    union: dict[str, str] = {}
    for p in parts:
        assert not set(p) & set(union), "parts overlap"
        union |= p
    assert union == whole  # every file, symlink and the empty directory, exactly once
    sizes = [sum(len(files[k]) for k in p if isinstance(files.get(k), bytes)) for p in parts]  # type: ignore[arg-type]
    biggest = max(len(v) for v in files.values() if isinstance(v, bytes))
    assert all(abs(s - sum(sizes) / 4) <= biggest for s in sizes), sizes
    # The same split on another machine: a read-only copy of part 2 from a fresh cache is equal.
    shared = run_cli("get", vid, "--part", "2", "--num-parts", "4", "-q",
                     "--cache-dir", str(tmp_path / "other-cache")).stdout.strip()
    assert hash_tree(Path(shared)) == parts[2]
    full = run_cli("get", vid, "-q", "--cache-dir", str(tmp_path / "other-cache")).stdout.strip()
    assert Path(shared) != Path(full) and hash_tree(Path(full)) == whole
    assert not os.access(shared, os.W_OK) or os.getuid() == 0  # read-only copy (root ignores modes)


def test_split_rule() -> None:
    assert part_of([10, 10, 10, 10], 2) == [0, 0, 1, 1]
    assert part_of([0, 0, 0], 3) == [0, 1, 2]
    assert part_of([100, 1, 1, 1], 2) == [0, 1, 1, 1]  # a big first file: off by at most one file's size
    sizes = [random.Random(3).randrange(1, 1000) for _ in range(1000)]
    parts = part_of(sizes, 7)
    assert parts == sorted(parts) and set(parts) == set(range(7))


def test_files_glob_and_bad_parts(env_store: str, tmp_path: Path) -> None:
    files = _files()
    vid = run_json("sync", "--folder", str(write_tree(tmp_path / "src", files)), "--project", "p",
                   "--name", "globs")["id"]
    dest = tmp_path / "sel"
    run_cli("get", vid, "--files", "train/c1/**", "--files", "*.csv", "--copy", str(dest))
    got = hash_tree(dest)
    assert set(got) == {k for k in files if k.startswith("train/c1/")} | {"labels.csv"}
    assert got["labels.csv"] == hashlib.sha256(b"id,label\n").hexdigest()
    bad_args = [(("--part", "4", "--num-parts", "4"), "--part must be 0 to 3"),
                (("--part", "-1", "--num-parts", "4"), "--part must be 0 to 3"),
                (("--part", "0"), "go together"),
                (("--num-parts", "0", "--part", "0"), "--num-parts must be")]
    for args, message in bad_args:
        proc = run_cli("get", vid, *args, "--copy", str(tmp_path / "bad"), check=False)
        assert_one_line_error(proc, message)
        assert not (tmp_path / "bad").exists() or not any((tmp_path / "bad").iterdir())


def test_list_files_filter_modified_and_compare(env_store: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a/1.txt": b"1", "a/2.txt": b"2", "b/3.csv": b"3"})
    v1 = run_json("sync", "--folder", str(src), "--project", "p", "--name", "ls")["id"]
    (src / "a/2.txt").write_bytes(b"two")
    (src / "c.txt").write_bytes(b"c")
    v2 = run_json("sync", "--folder", str(src), "--project", "p", "--name", "ls")["id"]
    rows = run_json("list", v2)["files"]
    assert [r["path"] for r in rows] == ["a/1.txt", "a/2.txt", "b/3.csv", "c.txt"]
    assert rows[1]["sha256"] == hashlib.sha256(b"two").hexdigest() and rows[1]["size"] == 3
    assert [r["path"] for r in run_json("list", v2, "--filter", "*.csv")["files"]] == ["b/3.csv"]
    assert [r["path"] for r in run_json("list", v2, "--modified")["files"]] == ["a/2.txt", "c.txt"]
    assert [r["path"] for r in run_json("list", v2, "--modified", "--filter", "a/**")["files"]] == ["a/2.txt"]
    assert_one_line_error(run_cli("list", "--modified", check=False), "need a REF")
    cmp = run_json("compare", v1, v2)
    assert cmp == run_json("diff", v1, v2)
    assert (cmp["added"], cmp["modified"], cmp["removed"]) == (["c.txt"], ["a/2.txt"], [])


def test_verify_a_folder_against_a_version(env_store: str, tmp_path: Path) -> None:
    files = {"a.txt": b"alpha", "d/b.bin": os.urandom(5000), "link": "->a.txt"}
    vid = run_json("sync", "--folder", str(write_tree(tmp_path / "src", files)), "--project", "p",
                   "--name", "vf")["id"]
    copy = tmp_path / "copy"
    run_cli("get", vid, "--copy", str(copy))
    ok = run_json("verify", vid, "--folder", str(copy))
    assert ok["ok"] and ok["problems"] == []
    data = bytearray((copy / "d/b.bin").read_bytes())
    data[100] ^= 1  # same size, other bytes
    (copy / "d/b.bin").write_bytes(bytes(data))
    (copy / "extra.txt").write_text("x")
    os.remove(copy / "a.txt")
    bad = run_cli("verify", vid, "--folder", str(copy), "--json", check=False)
    assert bad.returncode == 1
    assert json.loads(bad.stdout)["problems"] == [
        "missing   a.txt", "different d/b.bin", "extra     extra.txt"]
    by_size = run_cli("verify", vid, "--folder", str(copy), "--filesize", "--json", check=False)
    sizes = json.loads(by_size.stdout)
    assert sizes["problems"] == ["missing   a.txt", "extra     extra.txt"]  # same size: not hashed
    ds = Dataset.get(dataset_id=vid)
    assert ds.verify_dataset_hash(local_copy_path=copy, skip_hash=True) == sizes["problems"]
    assert_one_line_error(run_cli("verify", vid, "--filesize", check=False), "--filesize goes with --folder")
    nope = run_cli("verify", vid, "--folder", str(tmp_path / "nope"), check=False)
    assert_one_line_error(nope, "not a folder")
