"""No Azure key, SAS signature or connection string (nor a Google token) reaches a log, at DEBUG, through the
SDKs' own loggers (azure.core's http_logging_policy and network trace, google.auth, urllib3)."""

from __future__ import annotations

import base64
import os
import subprocess
import sys
import textwrap
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from fsmount.logs import scrub
from tests.emulators import AZ_ACCOUNT, AZ_KEY, Server
from tests.helpers import run_cli, write_tree
from tests.test_secrets import assert_no_secret

ROOT = Path(__file__).resolve().parent.parent


def _sig(text: str) -> str:
    return text.split("sig=", 1)[1].split("&", 1)[0]


def test_cli_debug_log_on_azure_holds_no_key(azure_store_url: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "alpha"})
    proc = run_cli("--log-level", "debug", "--store", azure_store_url, "sync", "--project", "p",
                   "--name", "n", "--folder", str(src), "-q")
    assert "azure.core.pipeline.policies.http_logging_policy" in proc.stderr  # the SDK really logged
    assert "urllib3.connectionpool" in proc.stderr
    assert_no_secret(proc.stderr, AZ_KEY, os.environ["AZURE_STORAGE_CONNECTION_STRING"])


def test_cli_debug_log_with_a_sas_token_holds_no_signature(
    azure_store_url: str, azurite: Server, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container = azure_store_url.split("/")[3]
    sas = generate_container_sas(AZ_ACCOUNT, container, account_key=AZ_KEY,
                                 permission=ContainerSasPermissions(read=True, write=True, delete=True,
                                                                    list=True, create=True, add=True),
                                 expiry=datetime.now(UTC) + timedelta(hours=1))
    monkeypatch.delenv("AZURE_STORAGE_CONNECTION_STRING")
    monkeypatch.setenv("AZURE_STORAGE_SAS_TOKEN", sas)
    src = write_tree(tmp_path / "src", {"a.txt": "alpha", "b.txt": "beta"})
    proc = run_cli("--log-level", "debug", "--store", azure_store_url, "--endpoint-url",
                   f"{azurite.url}/{AZ_ACCOUNT}", "sync", "--project", "p", "--name", "n",
                   "--folder", str(src), "-q")
    assert "sig=" in proc.stderr  # the request URLs were logged, with their signature masked
    assert_no_secret(proc.stderr, _sig(sas))  # the rest of a SAS (expiry, permissions) is no secret


_NETWORK_TRACE = textwrap.dedent("""
    import sys
    from fsmount.logs import setup_logging
    from fsmount.store import open_store
    setup_logging("debug")
    store = open_store(sys.argv[1], endpoint_url=sys.argv[2] if len(sys.argv) > 2 else None)
    # azure-core's network trace: every header (Authorization, x-ms-*) and the body, at DEBUG
    store.client.upload_blob("datasets/traced", b"traced body", overwrite=True, logging_enable=True)
    store.client.get_blob_client("datasets/traced").download_blob(logging_enable=True).readall()
    store.put("versions/x", b"record")
""")


@pytest.mark.parametrize("credential", ["connection-string", "key", "sas"])
def test_azure_network_trace_is_scrubbed(
    credential: str, azure_store_url: str, azurite: Server, monkeypatch: pytest.MonkeyPatch
) -> None:
    from azure.storage.blob import ContainerSasPermissions, generate_container_sas

    container = azure_store_url.split("/")[3]
    env = dict(os.environ)
    argv = [sys.executable, "-c", _NETWORK_TRACE, azure_store_url]
    secrets = [AZ_KEY]
    if credential != "connection-string":
        del env["AZURE_STORAGE_CONNECTION_STRING"]
        argv.append(f"{azurite.url}/{AZ_ACCOUNT}")
    if credential == "key":
        env["AZURE_STORAGE_KEY"] = AZ_KEY
    elif credential == "sas":
        sas = generate_container_sas(AZ_ACCOUNT, container, account_key=AZ_KEY,
                                     permission=ContainerSasPermissions(read=True, write=True, create=True),
                                     expiry=datetime.now(UTC) + timedelta(hours=1))
        env["AZURE_STORAGE_SAS_TOKEN"] = sas
        secrets += [_sig(sas)]
    proc = subprocess.run(argv, capture_output=True, text=True, env=env, timeout=120, cwd=ROOT)
    assert proc.returncode == 0, proc.stderr
    assert "Request headers:" in proc.stderr and "x-ms-version" in proc.stderr
    if credential != "sas":
        assert "'Authorization': '***'" in proc.stderr  # the SharedKey header was there, masked
    assert_no_secret(proc.stderr, *secrets)


def test_cli_debug_log_on_gcs(gcs_store_url: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "alpha"})
    proc = run_cli("--log-level", "debug", "--store", gcs_store_url, "sync", "--project", "p", "--name", "n",
                   "--folder", str(src), "-q")
    assert "urllib3.connectionpool" in proc.stderr and "/upload/storage/v1/b/" in proc.stderr
    assert_no_secret(proc.stderr)


@pytest.mark.parametrize(("text", "leak"), [
    # azure-core network trace lines
    ("Request headers:\n    'Authorization': 'SharedKey devstoreaccount1:c2lnbmF0dXJl+/='", "c2lnbmF0dXJl"),
    ("Request URL: 'http://127.0.0.1:1/a/c/b?se=2026&sp=rw&sr=c&sig=Zm9vYmFy%2B%3D'", "Zm9vYmFy"),
    # google.auth token refresh bodies and a signed URL
    ("b'grant_type=refresh_token&client_secret=GOCSPX-abc&refresh_token=1//0gXYZ'", "1//0gXYZ"),
    ('{"access_token": "ya29.c.b0Aaek", "expires_in": 3599, "token_type": "Bearer"}', "ya29"),
    ('{"id_token": "eyJhbGciOi.eyJzdWIi.sig"}', "eyJhbGciOi"),
    ("GET /b/o?X-Goog-Algorithm=GOOG4-RSA-SHA256&X-Goog-Signature=5a9c0ffee5a9c0ffee HTTP/1.1", "5a9c0ffee"),
    ("AccountName=a;AccountKey=" + base64.b64encode(b"k" * 64).decode() + ";BlobEndpoint=x", "a2tra2tr"),
])
def test_scrub_masks_cloud_sdk_secrets(text: str, leak: str) -> None:
    out = scrub(text)
    assert leak not in out, out
