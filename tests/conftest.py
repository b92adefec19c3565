"""Shared fixtures: isolated XDG folders, a real moto S3 server on 127.0.0.1, and store URLs."""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.emulators import azure_store_url, azurite, fake_gcs, gcp_storage_emulator, gcs_store_url  # noqa: F401

MOTO = Path(sys.executable).with_name("moto_server")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class MotoServer:
    """A moto S3 server in a subprocess; stop() and start() again on the same port (offline tests)."""

    def __init__(self, workdir: Path) -> None:
        self.port = _free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        log = open(self.workdir / "moto.log", "ab")  # noqa: SIM115
        self.proc = subprocess.Popen(
            [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
            stdout=log,
            stderr=subprocess.STDOUT,
            cwd=self.workdir,
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self.proc.poll() is not None:
                    raise RuntimeError("moto_server exited; see moto.log") from None
                time.sleep(0.05)
        raise RuntimeError("moto_server did not start listening within 30 s")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.terminate()
            try:
                self.proc.wait(10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
            self.proc = None


@pytest.fixture(scope="session")
def moto_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[MotoServer]:
    server = MotoServer(tmp_path_factory.mktemp("moto"))
    server.start()
    yield server
    server.stop()


@pytest.fixture(autouse=True)
def isolated_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Every test gets its own XDG folders, so no test sees another's store, cache or drafts."""
    home = tmp_path / "home"
    for var, sub in (("XDG_DATA_HOME", "data"), ("XDG_CACHE_HOME", "cache"), ("XDG_CONFIG_HOME", "config")):
        (home / sub).mkdir(parents=True)
        monkeypatch.setenv(var, str(home / sub))
    monkeypatch.setenv("FSMOUNT_RUNTIME_DIR", str(home / "run"))  # mount registrations, per test
    # The suite's file:// stores go through the cache as S3 stores do (the cache's own tests use them);
    # reading a local-disk store in place, the default, is tested where this is unset (test_pack_read*).
    monkeypatch.setenv("FSMOUNT_CACHE_LOCAL_STORE", "1")
    for var in ("FSMOUNT_STORE", "FSMOUNT_CACHE_DIR", "FSMOUNT_CACHE_SIZE", "FSMOUNT_PACK_SIZE",
                "STORAGE_EMULATOR_HOST", "AZURE_STORAGE_CONNECTION_STRING", "AZURE_STORAGE_ACCOUNT",
                "AZURE_STORAGE_KEY", "AZURE_STORAGE_SAS_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    # Tests written for one object per small file keep that layout; tests/test_packs*.py turn packing on.
    monkeypatch.setenv("FSMOUNT_PACK_THRESHOLD", "0")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing-secret")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    return home


@pytest.fixture
def s3_store_url(moto_server: MotoServer, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on the moto server; AWS_ENDPOINT_URL points boto3 (and subprocesses) at it."""
    import boto3

    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    bucket = f"test-{uuid.uuid4().hex[:12]}"
    boto3.client("s3", endpoint_url=moto_server.url).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/datasets"


@pytest.fixture
def file_store_url(tmp_path: Path) -> str:
    return f"file://{tmp_path / 'store'}"


@pytest.fixture(params=["file", "s3"])
def store_url(request: pytest.FixtureRequest) -> str:
    """Both store kinds: tests using this run once against each."""
    name = "file_store_url" if request.param == "file" else "s3_store_url"
    return request.getfixturevalue(name)


def fuse_available() -> bool:
    return os.path.exists("/dev/fuse") and shutil.which("fusermount3") is not None


@pytest.fixture
def require_fuse() -> None:
    """Real mounts need /dev/fuse; in CI its absence is a failure, elsewhere a skip."""
    if not fuse_available():
        if os.environ.get("CI") == "true":
            pytest.fail("/dev/fuse or fusermount3 is missing, and CI=true: mounts must be tested")
        pytest.skip("no /dev/fuse or fusermount3 on this machine")
