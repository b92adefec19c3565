"""How the cloud stores transfer: the connection pool fits the transfer threads, the transfer options reach
the SDK, and what the CLI and a store import before their first request (start-up cost, issue 12)."""

from __future__ import annotations

import logging
import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import pytest

from fsmount.store import open_store
from fsmount.store.cloud import CloudStore, Transfers

POOL_FULL = "Connection pool is full"


@pytest.fixture(params=["s3", "gcs", "azure"])
def cloud_url(request: pytest.FixtureRequest) -> str:
    return request.getfixturevalue(f"{request.param}_store_url")


def _transfer(url: str, threads: int, **options: object) -> None:
    store = open_store(url, **options)
    assert isinstance(store, CloudStore)
    data = os.urandom(256 * 1024)

    def one(i: int) -> None:
        store.put(f"objects/t/{i:04d}", data)
        assert store.get(f"objects/t/{i:04d}") == data

    try:
        with ThreadPoolExecutor(threads) as pool:
            list(pool.map(one, range(threads * 4)))
    finally:
        store.close()


def test_parallel_transfers_fit_the_connection_pool(cloud_url: str, caplog: pytest.LogCaptureFixture) -> None:
    """16 transfer threads (the uploader's and get's default) on the default pool: no connection is
    opened and thrown away because the pool is full (urllib3 warns when it does)."""
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        _transfer(cloud_url, 16)
    assert not [r for r in caplog.records if POOL_FULL in r.getMessage()]


@pytest.mark.parametrize("scheme", ["s3", "azure"])  # GCS keeps a session per thread: its pool never fills
def test_max_connections_reaches_the_pool(scheme: str, request: pytest.FixtureRequest,
                                          caplog: pytest.LogCaptureFixture) -> None:
    """The detector above can fail: a pool of 2 for 8 threads overflows, so the option reaches the SDK."""
    url = request.getfixturevalue(f"{scheme}_store_url")
    with caplog.at_level(logging.WARNING, logger="urllib3"):
        _transfer(url, 8, max_connections=2)
    assert [r for r in caplog.records if POOL_FULL in r.getMessage()]


def test_transfer_options() -> None:
    assert Transfers().read_timeout == 60.0 and Transfers(max_connections=3).max_connections == 3
    with pytest.raises(TypeError):
        open_store("s3://bucket", endpoint_url="http://127.0.0.1:9", max_connectionz=3)
    store = open_store("s3://bucket", endpoint_url="http://127.0.0.1:9", connect_timeout=1.5)
    assert isinstance(store, CloudStore)
    assert store.transfers == Transfers(connect_timeout=1.5, read_timeout=30.0)  # S3's own default
    assert store.client.meta.config.connect_timeout == 1.5
    store.close()


def _imported(code: str, modules: list[str], env: dict[str, str] | None = None) -> list[str]:
    """Which of `modules` a fresh interpreter has imported after running `code`."""
    probe = textwrap.dedent(code) + f"\nimport sys\nprint([m for m in {modules!r} if m in sys.modules])\n"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True,
                         env={**os.environ, **(env or {})}, timeout=120)
    return list(eval(out.stdout.strip().splitlines()[-1]))


def test_cli_start_up_imports_no_trio_and_no_cloud_sdk() -> None:
    """trio (~0.7 s) is for a mount's daemon; a cloud SDK (~1 s) only once a store of its kind is opened."""
    heavy = ["trio", "pyfuse3", "google.cloud.storage", "azure.storage.blob", "azure.identity"]
    assert _imported("import fsmount.cli.main", heavy) == []


def test_an_azure_store_with_a_key_does_not_import_azure_identity(azure_store_url: str) -> None:
    """azure-identity is needed only without a key, a SAS token or a connection string."""
    code = f"""
        from fsmount.store import open_store
        store = open_store({azure_store_url!r})
        store.put("objects/x", b"x")
        assert store.get("objects/x") == b"x"
    """
    assert _imported(code, ["azure.storage.blob", "azure.identity"]) == ["azure.storage.blob"]
