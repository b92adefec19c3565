"""A damaged stored block can be repaired: verify --repair --folder, and sync after a verify (issue 9)."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.format.hashing import digest, object_key
from fsmount.store import open_store
from tests.helpers import hash_tree, run_cli, run_json

BS = 64 * 1024


def _damage(url: str, key: str, data: bytes | None) -> None:
    """Change an object behind fsmount's back: new bytes (no checksum kept), or gone (None)."""
    if url.startswith("file://"):
        path = Path(urlparse(url).path) / key
        if data is None:
            path.unlink()
        else:
            path.write_bytes(data)
        return
    import boto3

    u = urlparse(url)
    client = boto3.client("s3", endpoint_url=os.environ["AWS_ENDPOINT_URL"])
    full = f"{u.path.strip('/')}/{key}"
    if data is None:
        client.delete_object(Bucket=u.netloc, Key=full)
    else:
        client.put_object(Bucket=u.netloc, Key=full, Body=data)


def _flip(data: bytes) -> bytes:
    return bytes([data[0] ^ 0xFF]) + data[1:]  # same size: a HEAD cannot tell


@pytest.fixture
def version(store_url: str, tmp_path: Path) -> tuple[Workspace, Dataset, Path]:
    src = tmp_path / "src"
    (src / "sub").mkdir(parents=True)
    (src / "big.bin").write_bytes(os.urandom(3 * BS + 100))  # four blocks
    (src / "sub" / "small.txt").write_bytes(b"small file\n" * 10)
    (src / "other.bin").write_bytes(os.urandom(5000))
    ws = Workspace(store_url)
    ds = Dataset.create("d", "p", block_size=BS, workspace=ws)
    ds.sync_folder(src)
    ds.finalize()
    return ws, ds, src


def _blocks(ds: Dataset, path: str) -> list[bytes]:
    e = dict(ds.iter_entries())[path]
    return [b if isinstance(b, bytes) else b[0] for b in e.blocks]  # type: ignore[union-attr]


def test_verify_repair_rewrites_corrupt_and_missing_blocks(version: tuple[Workspace, Dataset, Path]) -> None:
    ws, ds, src = version
    url = ws.store_url
    corrupt, missing = _blocks(ds, "big.bin")[1], _blocks(ds, "sub/small.txt")[0]
    _damage(url, object_key(corrupt), _flip(ws.store.get(object_key(corrupt))))
    _damage(url, object_key(missing), None)
    assert run_cli("verify", ds.id, "--store", url, check=False).returncode == 1

    res = run_json("verify", ds.id, "--repair", "--folder", str(src), "--store", url)
    assert res["ok"] and res["unrepaired"] == []
    repaired = " ".join(res["repaired"])
    assert corrupt.hex() in repaired and missing.hex() in repaired
    assert run_json("verify", ds.id, "--store", url)["ok"]
    assert digest(open_store(url).get(object_key(corrupt))) == corrupt


def test_verify_repair_says_what_it_could_not_repair(
    version: tuple[Workspace, Dataset, Path], tmp_path: Path
) -> None:
    ws, ds, src = version
    url = ws.store_url
    bad = _blocks(ds, "other.bin")[0]
    _damage(url, object_key(bad), _flip(ws.store.get(object_key(bad))))
    (src / "other.bin").write_bytes(os.urandom(5000))  # the local copy changed since: not a source
    proc = run_cli("verify", ds.id, "--repair", "--folder", str(src), "--store", url, check=False)
    assert proc.returncode == 1
    assert "NOT repaired" in proc.stdout and "other.bin" in proc.stdout and "content" in proc.stdout
    assert digest(open_store(url).get(object_key(bad))) != bad  # nothing written from wrong bytes
    empty = tmp_path / "empty"
    empty.mkdir()
    proc = run_cli("verify", ds.id, "--repair", "--folder", str(empty), "--store", url, check=False)
    assert proc.returncode == 1 and "cannot read" in proc.stdout
    assert run_cli("verify", ds.id, "--repair", "--store", url, check=False).returncode == 2


def test_sync_reuploads_a_block_verify_marked_bad(version: tuple[Workspace, Dataset, Path]) -> None:
    """Re-syncing the identical folder after a verify replaces the damaged block."""
    ws, ds, src = version
    url = ws.store_url
    bad = _blocks(ds, "big.bin")[2]
    _damage(url, object_key(bad), _flip(ws.store.get(object_key(bad))))
    assert run_cli("verify", ds.id, "--store", url, check=False).returncode == 1
    res = run_json("sync", "--folder", str(src), "--project", "p", "--name", "d", "--store", url)
    assert res["counts"] == {"added": 0, "modified": 0, "removed": 0}
    assert digest(open_store(url).get(object_key(bad))) == bad
    assert run_json("verify", ds.id, "--store", url)["ok"]
    assert run_json("verify", res["id"], "--store", url)["ok"]
    out = src.parent / "copy"
    run_cli("get", res["id"], "--copy", str(out), "--store", url)
    assert hash_tree(out) == hash_tree(src)


def test_replace_only_takes_bytes_that_hash_to_the_key(file_store_url: str) -> None:
    store = open_store(file_store_url)
    data = b"hello"
    key = object_key(digest(data))
    store.put(key, data)
    with pytest.raises(ValueError):
        store.replace(key, b"other")
    with pytest.raises(ValueError):
        store.replace("state/0123", data)
    store.replace(key, data)
    assert store.get(key) == data
