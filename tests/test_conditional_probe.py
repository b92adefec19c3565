"""S3 servers that ignore If-None-Match / If-Match (s3rver 3.7.1) are found by a probe and refused.

s3rver is a real S3 server (npm), started on 127.0.0.1 on a free port; `make test-servers`
installs it into .servers/, and the fixture installs it there when it is missing.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.errors import ConditionalWritesUnsupported, ConflictError
from fsmount.store import open_store
from fsmount.store.base import CONDITIONAL_WRITES_IGNORED
from fsmount.store.s3 import S3Store
from tests.conftest import _free_port
from tests.helpers import run_cli, run_json

ROOT = Path(__file__).resolve().parent.parent
S3RVER = ROOT / ".servers" / "node_modules" / "s3rver" / "bin" / "s3rver.js"
S3RVER_VERSION = "3.7.1"


def _install_s3rver() -> None:
    if S3RVER.exists():
        return
    npm = shutil.which("npm")
    if npm is None:
        pytest.skip("npm is missing: `make test-servers` installs nodejs, npm and s3rver")
    subprocess.run(
        [npm, "install", "--silent", "--prefix", str(ROOT / ".servers"), f"s3rver@{S3RVER_VERSION}"],
        check=True, capture_output=True, timeout=600,
    )


@pytest.fixture(scope="session")
def s3rver(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    """A running s3rver; yields its endpoint URL."""
    _install_s3rver()
    node = shutil.which("node")
    if node is None:
        pytest.skip("node is missing: `make test-servers` installs it")
    workdir = tmp_path_factory.mktemp("s3rver")
    port = _free_port()
    log = open(workdir / "s3rver.log", "ab")  # noqa: SIM115
    argv = [node, str(S3RVER), "-d", str(workdir / "data"), "-a", "127.0.0.1", "-p", str(port), "--silent"]
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT)
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                    break
            except OSError:
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"s3rver did not start; see {workdir / 's3rver.log'}") from None
                time.sleep(0.05)  # polling for the port, not a timing assumption
        yield f"http://127.0.0.1:{port}"
    finally:
        proc.terminate()
        try:
            proc.wait(10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()


def _client(endpoint: str) -> Any:
    """A client of its own session: boto3's default session keeps the credentials it first saw."""
    return boto3.session.Session(aws_access_key_id="S3RVER", aws_secret_access_key="S3RVER").client(
        "s3", endpoint_url=endpoint, region_name="us-east-1")


@pytest.fixture
def s3rver_url(s3rver: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket on s3rver (its fixed credentials); AWS_ENDPOINT_URL points subprocesses at it."""
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "S3RVER")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "S3RVER")
    monkeypatch.setenv("AWS_ENDPOINT_URL", s3rver)
    bucket = f"probe-{uuid.uuid4().hex[:12]}"
    _client(s3rver).create_bucket(Bucket=bucket)
    return f"s3://{bucket}/ds"


def test_s3rver_really_ignores_the_conditions(s3rver_url: str, s3rver: str) -> None:
    """What the probe is for: s3rver answers 200 to writes whose conditions do not hold."""
    client = _client(s3rver)
    bucket = s3rver_url.split("/")[2]
    client.put_object(Bucket=bucket, Key="k", Body=b"one", IfNoneMatch="*")
    client.put_object(Bucket=bucket, Key="k", Body=b"two", IfNoneMatch="*")
    client.put_object(Bucket=bucket, Key="k", Body=b"three", IfMatch='"not-the-etag"')
    assert client.get_object(Bucket=bucket, Key="k")["Body"].read() == b"three"


def test_the_probe_finds_s3rver_and_conditional_writes_are_refused(s3rver_url: str) -> None:
    store = open_store(s3rver_url)
    assert isinstance(store, S3Store)
    with pytest.raises(ConditionalWritesUnsupported) as e:
        store.put_conditional("state/x", b"x", if_match=None)
    assert str(e.value) == CONDITIONAL_WRITES_IGNORED and e.value.exit_code == 3
    with pytest.raises(ConditionalWritesUnsupported):
        store.put_conditional("state/x", b"x", if_match='"abc"')
    assert not store.exists("state/x")
    assert list(store.list("locks/")) == []  # the probe object is gone
    store.put("objects/aa/plain", b"write-once puts of objects still work")  # same bytes by any writer
    assert store.get("objects/aa/plain") == b"write-once puts of objects still work"


def test_moto_passes_the_probe(s3_store_url: str) -> None:
    store = open_store(s3_store_url)
    assert isinstance(store, S3Store)
    store.check_conditional_writes()
    etag = store.put_conditional("state/x", b"x", if_match=None)
    store.put_conditional("state/x", b"y", if_match=etag)
    assert list(store.list("locks/")) == []


def _copy_store(src: Path, url: str) -> None:
    """Put every object of a file:// store into the bucket (what a migration to this server does)."""
    store = open_store(url)
    for dirpath, dirnames, filenames in os.walk(src):
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            if not name.startswith("."):
                full = Path(dirpath) / name
                store.put(str(full.relative_to(src)), full.read_bytes())


def test_tagging_on_s3rver_fails_with_one_line_and_changes_nothing(
    s3rver_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    local = tmp_path / "store"
    (tmp_path / "src").mkdir()
    (tmp_path / "src" / "f").write_text("x")
    ref = run_json("sync", "--folder", str(tmp_path / "src"), "--project", "p", "--name", "n",
                   "--store", f"file://{local}")["id"]
    _copy_store(local, s3rver_url)
    monkeypatch.setenv("FSMOUNT_STORE", s3rver_url)

    assert run_json("info", ref)["tags"] == []  # reads keep working
    out = run_cli("tag", ref, "--add", "t0", check=False)
    assert out.returncode == 3, out
    assert out.stderr == f"fsmount: error: {CONDITIONAL_WRITES_IGNORED}\n"
    out = run_cli("sync", "--folder", str(tmp_path / "src"), "--project", "p", "--name", "n", check=False)
    assert out.returncode == 3 and out.stderr.strip().endswith(CONDITIONAL_WRITES_IGNORED), out

    # Eight writers at once, as in the issue: none may report success.
    ws = Workspace(s3rver_url)
    ds = Dataset.get(ref, workspace=ws)
    results: list[str] = []
    barrier = threading.Barrier(8)

    def tag(i: int) -> None:
        barrier.wait()
        try:
            ds.add_tags([f"t{i}"])
            results.append("ok")
        except (ConditionalWritesUnsupported, ConflictError) as e:
            results.append(type(e).__name__)

    threads = [threading.Thread(target=tag, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == ["ConditionalWritesUnsupported"] * 8
    assert run_json("info", ref)["tags"] == []
    ws.close()
