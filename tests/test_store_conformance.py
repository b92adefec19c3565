"""One conformance suite for every store: file:// and s3:// (a real moto server)."""

from __future__ import annotations

import threading

import pytest

from fsmount.errors import ObjectNotFound, PreconditionFailed, StoreError, StoreUnreachable, UsageError
from fsmount.store import open_store
from fsmount.store.base import ObjectStore


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


def test_racing_conditional_writes_exactly_one_wins(store: ObjectStore) -> None:
    etag = store.put_conditional("state/race", b"initial", if_match=None)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def writer(i: int) -> None:
        barrier.wait()
        try:
            store.put_conditional("state/race", str(i).encode(), if_match=etag)
            results.append("won")
        except PreconditionFailed:
            results.append("lost")

    threads = [threading.Thread(target=writer, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results.count("won") == 1 and results.count("lost") == 7


def test_concurrent_write_once_puts(store: ObjectStore) -> None:
    created: list[bool] = []
    barrier = threading.Barrier(6)

    def writer() -> None:
        barrier.wait()
        created.append(store.put("objects/dd/same", b"identical"))

    threads = [threading.Thread(target=writer) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert created.count(True) >= 1
    assert store.get("objects/dd/same") == b"identical"


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
