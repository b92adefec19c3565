"""Helpers for mount tests: a three-generation lineage with known contents, and safe real mounts."""

from __future__ import annotations

import contextlib
import hashlib
import os
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

from fsmount.api.dataset import Dataset
from fsmount.fs.mountpoint import is_mounted
from tests.helpers import run_cli, write_tree

BLOCK = 4096  # small blocks, so that small test files span many of them


def _blob(seed: str, size: int) -> bytes:
    out = bytearray()
    counter = 0
    while len(out) < size:
        out += hashlib.sha256(f"{seed}:{counter}".encode()).digest()
        counter += 1
    return bytes(out[:size])


def _version(store: str, work: Path, name: str, files: dict[str, bytes | str], parents: list[str],
             removes: tuple[str, ...] = ()) -> str:
    ds = Dataset.create(dataset_name="images", dataset_project="lineage", parent_datasets=parents,
                        store=store, block_size=BLOCK)
    for pattern in removes:
        ds.remove_files(pattern)
    if files:
        ds.add_files(write_tree(work / name, files))
    ds.finalize(message=name)
    return ds.id


def make_lineage(store: str, work: Path) -> tuple[list[str], dict[str, bytes | str]]:
    """g1 -> g2 (modifies, removes), plus a side root s1; g3 has parents [g2, s1] and removes more.

    Returns the ids [g1, s1, g2, g3] and the merged content of g3: path -> bytes, '->target'
    for symlinks, '' for empty directories (paths ending in '/').
    """
    g1_files: dict[str, bytes | str] = {
        "train/cat/001.jpg": _blob("cat1", 10_000),
        "train/cat/002.jpg": _blob("cat2", 3 * BLOCK),  # exactly three blocks
        "train/dog/001.jpg": _blob("dog1", 5),
        "labels.csv": b"id,label\n1,cat\n",
        "big.bin": _blob("big", 40 * BLOCK + 123),
        "empty.txt": b"",
        "link": "->labels.csv",
        "emptydir/": "",
    }
    g1 = _version(store, work, "g1", g1_files, [])
    s1_files: dict[str, bytes | str] = {
        "labels.csv": b"id,label\n1,cat\n2,dog\n",  # the later parent wins over g2's copy
        "val/001.jpg": _blob("val1", 7000),
        "bad/junk.jpg": b"junk",
    }
    s1 = _version(store, work, "s1", s1_files, [])
    g2_files: dict[str, bytes | str] = {"train/dog/002.jpg": _blob("dog2", BLOCK + 1),
                                        "train/cat/001.jpg": _blob("cat1-fixed", 9_000)}
    g2 = _version(store, work, "g2", g2_files, [g1], removes=("train/dog/001.jpg",))
    g3_files: dict[str, bytes | str] = {"test/001.jpg": _blob("test1", 2 * BLOCK - 1),
                                        "deep/a/b/c/d.txt": b"deep\n"}
    g3 = _version(store, work, "g3", g3_files, [g2, s1], removes=("bad/*",))

    merged = {**g1_files, **g2_files, **s1_files, **g3_files}
    for gone in ("train/dog/001.jpg", "bad/junk.jpg"):
        del merged[gone]
    merged["bad/"] = ""  # removing every file by glob leaves the folder, empty
    return [g1, s1, g2, g3], merged


def expected_hashes(files: dict[str, bytes | str]) -> dict[str, str]:
    """The same shape as tests.helpers.hash_tree gives for a folder."""
    out = {}
    for rel, content in files.items():
        if rel.endswith("/"):
            out[rel] = "/"
        elif isinstance(content, str):
            out[rel] = content
        else:
            out[rel] = hashlib.sha256(content).hexdigest()
    return out


def wait_until(pred, timeout: float = 30.0, what: str = "condition") -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out waiting for {what}")
        time.sleep(0.02)


def force_unmount(mnt: Path | str) -> None:
    """fusermount3 -u, then -z: never leave a mount behind, whatever state the daemon is in."""
    for args in (["-u"], ["-u", "-z"]):
        if not is_mounted(mnt):
            return
        subprocess.run(["fusermount3", *args, str(mnt)], capture_output=True, timeout=30)


@contextlib.contextmanager
def cli_mount(ref: str, mnt: Path, store: str, cache_dir: Path, *extra: str) -> Iterator[Path]:
    """Mount through the real CLI (a background daemon); always unmount afterwards."""
    mnt.mkdir(parents=True, exist_ok=True)
    try:
        run_cli("mount", ref, str(mnt), "--store", store, "--cache-dir", str(cache_dir), *extra)
        assert os.path.ismount(mnt)
        yield mnt
    finally:
        force_unmount(mnt)
