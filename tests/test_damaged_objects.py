"""An object that exists must be the one meant: partial or wrong objects at a block's key are replaced."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

import pytest

from fsmount.api.sync import sync
from fsmount.api.workspace import Workspace
from fsmount.check.store_check import check_store
from fsmount.commit.uploader import HEAD_FIRST
from fsmount.format.hashing import object_key
from fsmount.store.base import ObjectStore
from fsmount.store.local import LocalStore
from fsmount.store.s3 import S3Store
from tests.helpers import hash_tree


def _plant(store: ObjectStore, key: str, data: bytes, *, checksum: bool = False) -> None:
    """Leave bytes at a key as an interrupted PUT (or a broken proxy) does, behind the store's back."""
    if isinstance(store, LocalStore):
        (store.root / key).parent.mkdir(parents=True, exist_ok=True)
        (store.root / key).write_bytes(data)
    else:
        assert isinstance(store, S3Store)
        extra = {}
        if checksum:
            extra = {"ChecksumAlgorithm": "SHA256",
                     "ChecksumSHA256": base64.b64encode(hashlib.sha256(data).digest()).decode()}
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data, **extra)


@pytest.mark.parametrize("size", [1000, HEAD_FIRST + 1000])  # put() checks, and the uploader's HEAD
def test_sync_replaces_a_partial_block(store_url: str, tmp_path: Path, size: int) -> None:
    ws = Workspace(store_url, cache_dir=tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(size)
    (src / "f.bin").write_bytes(data)
    key = object_key(hashlib.sha256(data).digest())
    _plant(ws.store, key, data[: size // 2])
    ds, _ = sync(src, project="p", name="n", workspace=ws)
    assert ws.store.get(key) == data
    report = check_store(ws.store, read_data=True)
    assert report.ok, [str(p) for p in report.problems]
    assert hash_tree(Path(ds.get_local_copy())) == hash_tree(src)
    ws.close()


def test_a_same_size_object_with_another_checksum_is_replaced(s3_store_url: str, tmp_path: Path) -> None:
    """S3 keeps the SHA-256 sent with a PUT: a HEAD then tells a wrong object of the right size."""
    ws = Workspace(s3_store_url, cache_dir=tmp_path / "cache")
    src = tmp_path / "src"
    src.mkdir()
    data = os.urandom(HEAD_FIRST + 10)
    (src / "f.bin").write_bytes(data)
    key = object_key(hashlib.sha256(data).digest())
    _plant(ws.store, key, os.urandom(len(data)), checksum=True)
    assert not ws.store.holds(key, len(data))
    sync(src, project="p", name="n", workspace=ws)
    assert ws.store.get(key) == data
    info = ws.store.head(key)
    assert info is not None and info.sha256 == hashlib.sha256(data).digest()  # sent with the PUT
    ws.close()
