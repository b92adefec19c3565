"""fsmount:// through fsspec, pandas and pyarrow: versions read without FUSE, through the verified cache."""

from __future__ import annotations

import hashlib
import io
import os
from pathlib import Path

import fsspec
import pandas as pd
import pyarrow.dataset as pads
import pytest

from fsmount.api.dataset import Dataset
from fsmount.api.fsspec_fs import FsmountFileSystem
from tests.helpers import run_cli, run_json, write_tree

BLOCK = 64 * 1024


def _make_version(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    """cv/pets 1.2.0: labels.csv, train/ with two Parquet files, blob.bin of several blocks."""
    monkeypatch.setenv("FSMOUNT_STORE", store_url)
    FsmountFileSystem.clear_instance_cache()  # fsspec keeps instances by their arguments: none here
    src = tmp_path / "src"
    (src / "train").mkdir(parents=True)
    rows = pd.DataFrame({"x": range(100), "y": [f"r{i}" for i in range(100)]})
    rows.to_parquet(src / "train/part-0.parquet")
    pd.DataFrame({"x": range(100, 150), "y": ["s"] * 50}).to_parquet(src / "train/part-1.parquet")
    write_tree(src, {"labels.csv": "name,label\ncat,1\ndog,2\n", "blob.bin": os.urandom(5 * BLOCK + 17)})
    vid = run_json("create", "--project", "cv", "--name", "pets", "--version", "1.2.0", "--block-size",
                   "64KiB")["id"]
    run_cli("add", str(src))
    run_cli("close")
    return vid, src


@pytest.fixture
def version(store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    return _make_version(store_url, tmp_path, monkeypatch)


@pytest.fixture
def file_version(file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[str, Path]:
    return _make_version(file_store_url, tmp_path, monkeypatch)


def test_open_pandas_pyarrow(version: tuple[str, Path], tmp_path: Path) -> None:
    vid, src = version
    with fsspec.open("fsmount://cv/pets@1.2.0/labels.csv", "rt") as f:
        assert f.read() == (src / "labels.csv").read_text()
    want = pd.concat([pd.read_parquet(src / f"train/part-{i}.parquet") for i in (0, 1)])
    got = pd.read_parquet("fsmount://cv/pets/train/")
    assert got.sort_values("x").reset_index(drop=True).equals(want.reset_index(drop=True))
    fs = FsmountFileSystem(cache_dir=str(tmp_path / "other-cache"))
    table = pads.dataset(f"{vid}/train", filesystem=fs, format="parquet").to_table()
    assert sorted(table.column("x").to_pylist()) == list(range(150))
    assert pd.read_csv(f"fsmount://{vid[:8]}/labels.csv")["label"].tolist() == [1, 2]


def test_ls_info_glob_ranges_seek(version: tuple[str, Path]) -> None:
    vid, src = version
    fs = fsspec.filesystem("fsmount")
    names = ("blob.bin", "labels.csv", "train")
    assert fs.ls("cv/pets@1.2.0", detail=False) == [f"cv/pets@1.2.0/{n}" for n in names]
    blob = (src / "blob.bin").read_bytes()
    info = fs.info("cv/pets/blob.bin")
    assert (info["type"], info["size"]) == ("file", len(blob))
    assert info["sha256"] == hashlib.sha256(blob).hexdigest()
    assert fs.info("cv/pets/train")["type"] == "directory" and fs.isdir("cv/pets")
    assert not fs.exists("cv/pets/no")
    assert fs.glob("cv/pets/**/*.parquet") == [f"cv/pets/train/part-{i}.parquet" for i in (0, 1)]
    ranges = ((0, 10), (BLOCK - 3, BLOCK + 3), (BLOCK, 4 * BLOCK + 1), (-20, None), (len(blob) - 1, 10**9))
    for start, end in ranges:
        assert fs.cat_file("cv/pets/blob.bin", start, end) == blob[start:end]
    with fs.open(f"{vid}/blob.bin", block_size=1000) as f:
        f.seek(3 * BLOCK - 100)
        assert f.read(300) == blob[3 * BLOCK - 100:3 * BLOCK + 200]
        f.seek(-5, io.SEEK_END)
        assert f.read() == blob[-5:]
        f.seek(7)
        assert f.read(3) == blob[7:10]
    with pytest.raises(FileNotFoundError):
        fs.info("cv/nope/labels.csv")
    with pytest.raises(PermissionError):
        fs.open("cv/pets/new.txt", "wb")


def test_reads_go_through_the_verified_cache(file_store_url: str, file_version: tuple[str, Path],
                                             tmp_path: Path) -> None:
    """A damaged block in the store is an error, never its bytes; the cache then serves without the store."""
    vid, src = file_version
    blob = (src / "blob.bin").read_bytes()
    entry = dict(Dataset.get(dataset_id=vid).iter_entries())["blob.bin"]
    h = entry.blocks[2]  # type: ignore[union-attr]
    assert isinstance(h, bytes)
    obj = Path(file_store_url.removeprefix("file://")) / "objects" / h.hex()[:2] / h.hex()
    good = obj.read_bytes()
    obj.write_bytes(b"\0" * len(good))
    fs = FsmountFileSystem(cache_dir=str(tmp_path / "c"), skip_instance_cache=True)
    assert fs.cat_file("cv/pets/blob.bin", 0, BLOCK) == blob[:BLOCK]
    with pytest.raises(OSError, match="corrupt"):
        fs.cat_file("cv/pets/blob.bin", 2 * BLOCK, 2 * BLOCK + 10)
    obj.write_bytes(good)
    assert fs.cat_file("cv/pets/blob.bin") == blob
    obj.unlink()  # now cached: the store is not asked again
    assert FsmountFileSystem(cache_dir=str(tmp_path / "c"), skip_instance_cache=True).cat_file(
        "cv/pets/blob.bin") == blob


def test_hugging_face_load_dataset(version: tuple[str, Path], tmp_path: Path,
                                   monkeypatch: pytest.MonkeyPatch) -> None:
    datasets = pytest.importorskip("datasets")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))  # its caches, inside the test
    ds = datasets.load_dataset("parquet", data_files="fsmount://cv/pets@1.2.0/train/*.parquet", split="train",
                               cache_dir=str(tmp_path / "hf-cache"))
    assert sorted(ds["x"]) == list(range(150))
