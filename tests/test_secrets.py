"""No secret reaches a log: the CLI's and the daemon's debug logs over a real S3 server, and files 0600."""

from __future__ import annotations

import base64
import logging
import os
import re
import stat
import subprocess
import sys
import textwrap
import urllib.parse
from pathlib import Path

import pytest

from fsmount.fs import control
from fsmount.logs import PrivateRotatingFileHandler, scrub
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, write_tree

# A hex signature after Signature= / Signature: (botocore prints it on the next line), or an
# X-Amz-Security-Token / Authorization whose value is anything but the mask.
_SIGNATURE = re.compile(r"(?i)signature['\"]?\s*[:=]\s*b?['\"]?[0-9a-f]{16,}")
_TOKEN_HEADER = re.compile(r"(?i)x-amz-security-token['\"]?\s*[:=]\s*+(?!(?:b?['\"])?\*\*\*)")
_AUTH_HEADER = re.compile(r"(?i)authorization['\"]?\s*[:=]\s*+(?!(?:b?['\"])?\*\*\*)")


def _random_secret() -> str:
    return base64.b64encode(os.urandom(30)).decode()  # '+', '/' and '=' too, as real tokens have


def assert_no_secret(text: str, *secrets: str) -> None:
    for s in secrets:
        for form in {s, urllib.parse.quote(s, safe=""), s[:12]}:
            leak = next((ln for ln in text.splitlines() if form in ln), "")
            assert not leak, f"secret {form!r} leaked: {leak}"
    for pat in (_SIGNATURE, _TOKEN_HEADER, _AUTH_HEADER):
        m = pat.search(text)
        assert m is None, f"unscrubbed {pat.pattern!r}: {text[max(0, m.start() - 80): m.end() + 80]!r}"


def assert_botocore_logged(text: str) -> None:
    """The log really has the request lines (so a log that is simply off would fail the test)."""
    assert "botocore.endpoint: Sending http request" in text
    assert "botocore.auth: Signature:" in text
    assert "X-Amz-Security-Token" in text and "'Authorization': b'***'" in text
    assert "urllib3.connectionpool" in text


@pytest.fixture
def session_secrets(monkeypatch: pytest.MonkeyPatch) -> tuple[str, str]:
    secret, token = _random_secret(), _random_secret()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)
    monkeypatch.setenv("AWS_SESSION_TOKEN", token)
    return secret, token


@pytest.mark.s3
def test_cli_debug_log_holds_no_secret(
    s3_store_url: str, tmp_path: Path, session_secrets: tuple[str, str]
) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": "alpha", "d/b.txt": "beta"})
    sync = run_cli("--log-level", "debug", "--store", s3_store_url, "sync", "--project", "p", "--name", "n",
                   "--folder", str(src), "-q")
    ls = run_cli("--log-level", "debug", "--store", s3_store_url, "ls", "p/n", "-r")
    assert "d/b.txt" in ls.stdout
    for text in (sync.stderr, ls.stderr):
        assert_botocore_logged(text)
        assert_no_secret(text, *session_secrets)


@pytest.mark.s3
def test_secrets_from_a_shared_credentials_file_are_scrubbed_too(
    s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Keys botocore finds itself (not in our environment) are caught by what they look like."""
    secret, token = _random_secret(), _random_secret()
    shared = tmp_path / "aws-credentials"
    shared.write_text(f"[default]\naws_access_key_id = AKIAFROMFILE\naws_secret_access_key = {secret}\n"
                      f"aws_session_token = {token}\n")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", str(shared))
    for var in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(var, raising=False)
    src = write_tree(tmp_path / "src", {"a.txt": "alpha"})
    proc = run_cli("--log-level", "debug", "--store", s3_store_url, "sync", "--project", "p", "--name", "n",
                   "--folder", str(src), "-q")
    assert_botocore_logged(proc.stderr)
    assert_no_secret(proc.stderr, secret, token)


@pytest.mark.s3
def test_daemon_debug_log_file_holds_no_secret_and_is_private(
    s3_store_url: str, tmp_path: Path, session_secrets: tuple[str, str], require_fuse: None
) -> None:
    src = write_tree(tmp_path / "src", {"x.txt": "x" * 1000})
    run_cli("--store", s3_store_url, "sync", "--project", "p", "--name", "n", "--folder", str(src), "-q")
    log_file = tmp_path / "daemon.log"
    old = os.umask(0o022)
    try:
        with cli_mount("p/n", tmp_path / "mnt", s3_store_url, tmp_path / "cache",
                       "--log-level", "debug", "--log-file", str(log_file)) as mnt:
            assert (mnt / "x.txt").read_text() == "x" * 1000
    finally:
        os.umask(old)
    text = log_file.read_text()
    assert_botocore_logged(text)
    assert_no_secret(text, *session_secrets)
    assert stat.S_IMODE(log_file.stat().st_mode) == 0o600


_LIBRARY_SCRIPT = textwrap.dedent("""
    import io, logging, sys, threading
    from fsmount.logs import setup_logging
    setup_logging("debug")
    # A library with its own handler that does not propagate: our root handler never sees it.
    lib = logging.getLogger("somelib")
    lib.propagate = False
    own = logging.StreamHandler(sys.stdout)
    own.setFormatter(logging.Formatter("%(name)s %(message)s"))
    lib.addHandler(own)
    secret = sys.argv[1]
    lib.debug("headers: %s", {"Authorization": "AWS4-HMAC-SHA256 Credential=AKIA/x, Signature=" + "ab" * 32})
    lib.debug("plain %s and %r", secret, [secret])
    try:
        raise RuntimeError("boom with " + secret)
    except RuntimeError:
        lib.exception("failed")
        logging.getLogger("botocore.x").exception("failed too")
    logging.getLogger("urllib3.y").debug("GET /k?X-Amz-Signature=%s&sig=%s HTTP/1.1", "cd" * 32, "Zm9v%2B")
    logging.getLogger("s3transfer").info("stack", stack_info=True, extra={"k": secret})
    def fail():
        raise ValueError("thread died holding " + secret)
    t = threading.Thread(target=fail, name="worker")
    t.start()
    t.join()
    raise SystemError("the end of " + secret)
""")


def test_every_logger_and_handler_is_scrubbed(tmp_path: Path) -> None:
    """Message, args, exc_info and stack text, through a library's own handler and through ours."""
    secret = _random_secret()
    env = {**os.environ, "AWS_SESSION_TOKEN": secret}
    proc = subprocess.run([sys.executable, "-c", _LIBRARY_SCRIPT, secret], capture_output=True, text=True,
                          env=env, timeout=60)
    assert proc.returncode == 1, proc.stderr
    out = proc.stdout + proc.stderr
    assert "Exception in thread worker" in proc.stderr and "ValueError: thread died holding ***" in out
    assert "SystemError: the end of ***" in proc.stderr
    assert "somelib plain *** and ['***']" in proc.stdout
    assert "RuntimeError: boom with ***" in proc.stdout and "RuntimeError: boom with ***" in proc.stderr
    assert "X-Amz-Signature=***&sig=***" in proc.stderr
    assert "Traceback" in proc.stdout
    assert secret not in out and "ab" * 32 not in out and "cd" * 32 not in out and "Zm9v" not in out


@pytest.mark.parametrize(("text", "leak"), [
    ("DefaultEndpointsProtocol=https;AccountName=a;AccountKey=c2VjcmV0+/kZXk=;EndpointSuffix=x", "c2VjcmV0"),
    ("https://acct.blob.core.windows.net/c/b?sv=2021-08-06&ss=b&sig=Xy%2BzQ%3D&se=2026", "Xy%2BzQ"),
    ("SharedAccessSignature=sv=2021&sig=abcDEF123", "abcDEF123"),
    ('{"type": "service_account", "private_key": "-----BEGIN PRIVATE KEY-----\\nMIIEvQIBADAN\\n'
     '-----END PRIVATE KEY-----\\n", "client_email": "x@y"}', "MIIEvQIBADAN"),
    ("-----BEGIN RSA PRIVATE KEY-----\nMIIEvQIBADAN\n-----END RSA PRIVATE KEY-----", "MIIEvQIBADAN"),
    ("send: b'GET / HTTP/1.1\\r\\nAuthorization: Bearer ya29.a0AfH6SMB\\r\\nHost: x'", "ya29"),
    ('{"access_token": "ya29.xyz123", "expires_in": 3599}', "ya29"),
    ("x-goog-signature=0123456789abcdef0123&x-goog-date=2026", "0123456789abcdef"),
    ("Authorization: SharedKey acct:c2lnbmF0dXJlcw==", "c2lnbmF0dXJlcw"),
    ("aws_secret_access_key = wJalrXUtnFEMI/K7MDENG", "wJalrXUtnFEMI"),
    ("client_secret=s3cr3t-value&grant_type=client_credentials", "s3cr3t-value"),
    ("x-amz-security-token:FwoGZXIvYXdzEBYaDK", "FwoGZXIv"),
    ("<Credentials><AccessKeyId>ASIA1</AccessKeyId><SecretAccessKey>wJalrXUtnFEMI</SecretAccessKey>"
     "<SessionToken>FwoGZXIv</SessionToken></Credentials>", "wJalrXUtnFEMI"),
    ('{"AccessKeyId": "ASIA1", "SecretAccessKey": "wJalrXUtnFEMI", "Token": "FwoG"}', "wJalrXUtnFEMI"),
])
def test_scrub_catches_other_stores_secrets(text: str, leak: str) -> None:
    clean = scrub(text)
    assert leak not in clean and "***" in clean


def test_scrub_leaves_ordinary_text_alone() -> None:
    for text in ("Calculating signature using v4 auth.", "GET /bucket/objects/ab/abcd HTTP/1.1 200",
                 "credentials file /etc/x: no such file", "2 blocks uploaded"):
        assert scrub(text) == text


def test_log_files_are_created_and_rotated_0600(tmp_path: Path) -> None:
    old = os.umask(0o022)
    try:
        path = tmp_path / "f.log"
        (tmp_path / "f.log.2").write_text("old rotated file\n")
        os.chmod(tmp_path / "f.log.2", 0o644)
        h = PrivateRotatingFileHandler(str(path), maxBytes=200, backupCount=3)
        try:
            assert stat.S_IMODE(path.stat().st_mode) == 0o600
            assert stat.S_IMODE((tmp_path / "f.log.2").stat().st_mode) == 0o600
            logger = logging.getLogger("test_secrets.rotation")
            logger.propagate = False
            logger.addHandler(h)
            for i in range(40):
                logger.warning("line %d of some length to make the file roll over", i)
            logger.removeHandler(h)
        finally:
            h.close()
        rotated = sorted(tmp_path.glob("f.log*"))
        assert len(rotated) == 4, rotated
        for p in rotated:
            assert stat.S_IMODE(p.stat().st_mode) == 0o600, p
    finally:
        os.umask(old)


def test_an_existing_open_log_file_is_tightened_and_a_symlink_refused(tmp_path: Path) -> None:
    path = tmp_path / "open.log"
    path.write_text("")
    os.chmod(path, 0o666)
    PrivateRotatingFileHandler(str(path)).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    victim = tmp_path / "victim"
    victim.write_text("")
    os.chmod(victim, 0o644)
    (tmp_path / "link.log").symlink_to(victim)
    proc = run_cli("--log-level", "debug", "mount", "x", str(tmp_path), "--foreground",
                   "--log-file", str(tmp_path / "link.log"), check=False)
    assert proc.returncode != 0 and "log file" in proc.stderr and "Traceback" not in proc.stderr
    assert stat.S_IMODE(victim.stat().st_mode) == 0o644


def test_background_daemon_log_is_private(file_store_url: str, tmp_path: Path, require_fuse: None) -> None:
    src = write_tree(tmp_path / "src", {"x.txt": "x"})
    run_cli("--store", file_store_url, "sync", "--project", "p", "--name", "n", "--folder", str(src), "-q")
    old = os.umask(0o022)
    try:
        with cli_mount("p/n", tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
            mode = stat.S_IMODE(control.log_path(str(mnt)).stat().st_mode)
    finally:
        os.umask(old)
    assert mode == 0o600
