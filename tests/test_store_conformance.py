"""One conformance suite for every store: file://, s3://, gs:// and azure://, each on a real server."""
# gs:// runs on fake-gcs-server, azure:// on Azurite, s3:// on moto (tests/emulators.py, conftest.py).

from __future__ import annotations

import hashlib
import os
import threading
from collections.abc import Callable

import pytest

from fsmount.errors import ObjectNotFound, PreconditionFailed, StoreError, StoreUnreachable, UsageError
from fsmount.store import open_store
from fsmount.store.azure import AzureStore
from fsmount.store.base import ObjectStore
from fsmount.store.gcs import GCSStore
from fsmount.store.local import LocalStore
from fsmount.store.s3 import S3Store


@pytest.fixture(params=["file", "s3", "gcs", "azure"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Every store kind: each test here runs against all four."""
    return request.getfixturevalue(f"{request.param}_store_url")


@pytest.fixture
def store(store_url: str) -> ObjectStore:
    return open_store(store_url)


def test_put_is_write_once(store: ObjectStore) -> None:
    assert store.put("objects/aa/one", b"first") is True
    assert store.put("objects/aa/one", b"second") is False
    assert store.get("objects/aa/one") == b"first"


def test_get_range_and_head(store: ObjectStore) -> None:
    data = bytes(range(256)) * 40
    store.put("objects/bb/r", data)
    assert store.get_range("objects/bb/r", 100, 50) == data[100:150]
    assert store.get_range("objects/bb/r", len(data) - 10, 100) == data[-10:]
    info = store.head("objects/bb/r")
    assert info is not None and info.size == len(data)
    assert store.head("objects/bb/missing") is None
    assert store.exists("objects/bb/r") and not store.exists("objects/bb/missing")


def test_missing_object_raises(store: ObjectStore) -> None:
    with pytest.raises(ObjectNotFound):
        store.get("objects/cc/none")
    with pytest.raises(ObjectNotFound):
        store.get_range("objects/cc/none", 0, 1)
    with pytest.raises(ObjectNotFound):
        store.get_versioned("state/none")


def test_list_by_prefix_and_delete(store: ObjectStore) -> None:
    for k in ("state/a", "state/b", "versions/a", "objects/00/x"):
        store.put(k, k.encode())
    assert sorted(i.key for i in store.list("state/")) == ["state/a", "state/b"]
    assert {i.key for i in store.list("objects/")} == {"objects/00/x"}
    store.delete("state/a")
    store.delete("state/a")  # deleting twice is fine
    assert sorted(i.key for i in store.list("state/")) == ["state/b"]


def test_conditional_create_and_update(store: ObjectStore) -> None:
    etag = store.put_conditional("state/v", b"one", if_match=None)
    with pytest.raises(PreconditionFailed):
        store.put_conditional("state/v", b"again", if_match=None)
    data, current = store.get_versioned("state/v")
    assert data == b"one" and current == etag
    etag2 = store.put_conditional("state/v", b"two", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put_conditional("state/v", b"stale", if_match=etag)
    assert store.get_versioned("state/v") == (b"two", etag2)


def _race(n: int, write: Callable[[int], object]) -> list[int]:
    """Run `write(i)` in n threads released at once; return the i of every call that succeeded."""
    won: list[int] = []
    barrier = threading.Barrier(n)

    def run(i: int) -> None:
        barrier.wait()
        try:
            if write(i) is not False:
                won.append(i)
        except PreconditionFailed:
            pass

    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    return won


def test_racing_conditional_updates_exactly_one_wins(store: ObjectStore) -> None:
    etag = store.put_conditional("state/race", b"initial", if_match=None)
    won = _race(8, lambda i: store.put_conditional("state/race", f"writer {i}".encode(), if_match=etag))
    assert len(won) == 1, f"{len(won)} writers were told they won"
    assert store.get("state/race") == f"writer {won[0]}".encode()


def test_racing_conditional_creates_exactly_one_wins(store: ObjectStore) -> None:
    won = _race(8, lambda i: store.put_conditional("state/new", f"creator {i}".encode(), if_match=None))
    assert len(won) == 1, f"{len(won)} creators were told they won"
    assert store.get("state/new") == f"creator {won[0]}".encode()


def test_concurrent_write_once_puts(store: ObjectStore) -> None:
    """Distinct bytes per writer: a put that overwrote would show as a second winner or other bytes."""
    won = _race(6, lambda i: store.put("objects/dd/same", f"writer {i}".encode()))
    assert len(won) == 1, f"{len(won)} writers were told they created the object"
    assert store.get("objects/dd/same") == f"writer {won[0]}".encode()


def test_a_short_object_at_a_content_key_is_replaced(store: ObjectStore) -> None:
    """A partial object left by an interrupted upload is not "already there": put replaces it."""
    data = os.urandom(3000)
    h = hashlib.sha256(data)
    key = f"objects/{h.hexdigest()[:2]}/{h.hexdigest()}"
    _plant(store, key, data[:1000])
    assert not store.holds(key, len(data))
    assert store.put(key, data) is True
    assert store.get(key) == data and store.holds(key, len(data))
    assert store.put(key, data) is False


def test_holds_checks_size_and_sha256(store: ObjectStore) -> None:
    data = b"x" * 5000
    h = hashlib.sha256(data)
    key = f"objects/{h.hexdigest()[:2]}/{h.hexdigest()}"
    assert not store.holds(key, len(data))
    store.put(key, data)
    assert store.holds(key, len(data)) and store.holds(key, len(data), h.digest())
    assert not store.holds(key, len(data) + 1)


def test_other_keys_stay_write_once_whatever_their_size(store: ObjectStore) -> None:
    """Only content-addressed keys say what they must hold; a record that exists is never replaced."""
    store.put("versions/abc", b"the first record")
    assert store.put("versions/abc", b"another, longer record") is False
    assert store.get("versions/abc") == b"the first record"


def _plant(store: ObjectStore, key: str, data: bytes) -> None:
    """Put bytes at a key behind the store's back, as a crashed writer or a broken server leaves them."""
    if isinstance(store, LocalStore):
        path = store.root / key
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(data)
    elif isinstance(store, GCSStore):
        store._bucket().blob(store.prefix + key).upload_from_string(data)
    elif isinstance(store, AzureStore):
        store.client.upload_blob(store.prefix + key, data, overwrite=True)
    else:
        assert isinstance(store, S3Store)
        store.client.put_object(Bucket=store.bucket, Key=store.prefix + key, Body=data)


@pytest.mark.parametrize("url", ["s3://", "ftp://x/y", "s3://bucket?x=1", "relative/path", "file://"])
def test_malformed_urls(url: str) -> None:
    with pytest.raises(UsageError):
        open_store(url)


def test_missing_bucket_is_a_store_error(s3_store_url: str) -> None:
    store = open_store("s3://no-such-bucket-here/x")
    with pytest.raises(StoreError, match="does not exist"):
        store.get("state/x")


def test_unreachable_endpoint_fails_fast(monkeypatch: pytest.MonkeyPatch) -> None:
    from tests.conftest import _free_port

    store = open_store(
        "s3://bucket", endpoint_url=f"http://127.0.0.1:{_free_port()}", connect_timeout=1.0, max_attempts=1
    )
    with pytest.raises(StoreUnreachable):
        store.get("state/x")
