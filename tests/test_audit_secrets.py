"""Audit of issue 9 ("no secret leaked"): credentials in an external link URL never reach a log or the UI.

A link such as https://user:pass@host/f?X-Amz-Signature=... (a presigned URL, a SAS token, basic auth)
is stored as it is in the tree: whoever reads the store reads it. But no message, no log line at any
level and no page of the web UI shows the password or the signature. A URL's user info is sent as
Basic auth (a real HTTP server on 127.0.0.1 checks it), never left in the request line.
"""

from __future__ import annotations

import base64
import os
import socket
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import httpx
import pytest

from fsmount.store.external import shown
from tests.helpers import run_cli, run_json, send_ranged, serve_http
from tests.ui_helpers import UiServer

PASSWORD = "s3cretPW42"
SIG = "0a1b2c3d4e5f60718293a4b5c6d7e8f9"
CRED = "AKIAAUDITEXAMPLE42"
SECRETS = (PASSWORD, SIG, CRED)
DATA: dict[str, bytes] = {}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        want = "Basic " + base64.b64encode(f"alice:{PASSWORD}".encode()).decode()
        if self.headers.get("Authorization") != want or SIG not in self.path:
            self.send_error(403)
            return
        data = DATA["f"]
        send_ranged(self, data)


@pytest.fixture
def server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("FSMOUNT_STORE", f"file://{tmp_path / 'store'}")
    DATA["f"] = os.urandom(100_000)
    with serve_http(_Handler) as port:
        yield f"127.0.0.1:{port}"


def _url(hostport: str) -> str:
    return (f"http://alice:{PASSWORD}@{hostport}/data/f.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256"
            f"&X-Amz-Credential={CRED}&X-Amz-Signature={SIG}&x-id=GetObject")


def _clean(text: str, what: str) -> None:
    for s in SECRETS:
        assert s not in text, f"{what} shows {s!r}: {text[-2000:]}"


def test_shown_masks_user_info_and_signatures() -> None:
    assert shown(_url("h:1")) == ("http://***@h:1/data/f.bin?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=***"
                                  "&X-Amz-Signature=***&x-id=GetObject")
    assert shown("https://a.blob.core.windows.net/c/b?sv=2022&sig=abc%2B&se=1") == \
        "https://a.blob.core.windows.net/c/b?sv=2022&sig=***&se=1"
    assert shown("s3://bucket/raw/a b.bin") == "s3://bucket/raw/a b.bin"
    assert shown("file:///data/x") == "file:///data/x"


def test_credentials_in_link_urls_never_reach_a_log_or_the_ui(server: str, tmp_path: Path) -> None:
    url = _url(server)
    vid = run_json("create", "--project", "p", "--name", "ext", "--block-size", "64KiB")["id"]
    r = run_cli("--log-level", "debug", "add", "--links", url)
    _clean(r.stdout + r.stderr, "add")
    run_cli("close")
    r = run_cli("--log-level", "debug", "get", vid, "--copy", str(tmp_path / "copy"))
    _clean(r.stdout + r.stderr, "get")
    assert (tmp_path / "copy/f.bin").read_bytes() == DATA["f"]  # user info went as Basic auth
    ui = UiServer(os.environ["FSMOUNT_STORE"], tmp_path / "uicache")
    try:
        with httpx.Client(base_url=ui.url, timeout=30) as c:
            for page in (f"/v/{vid}", f"/v/{vid}/files", f"/v/{vid}/files/f.bin", "/?q=ext"):
                resp = c.get(page)
                assert resp.status_code < 500, page
                _clean(resp.text, page)
        ui.proc.terminate()
        assert ui.proc.stderr is not None
        _clean(ui.proc.stderr.read(), "the UI's log")
    finally:
        ui.stop()
    DATA["f"] = os.urandom(100_000)  # the source changes: every read now fails, naming the URL
    r = run_cli("--log-level", "debug", "get", vid, "--copy", str(tmp_path / "copy2"), "--cache-dir",
                str(tmp_path / "fresh-cache"), check=False)  # (what was cached before is still right)
    assert r.returncode != 0 and "changed since it was added" in r.stderr, r.stderr
    assert f"http://***@{server}/data/f.bin" in r.stderr
    _clean(r.stdout + r.stderr, "a failed get")


def test_an_unreachable_link_with_credentials_is_one_clean_line(server: str) -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    run_json("create", "--project", "p", "--name", "ext2")
    for url in (_url(closed), f"http://alice:{PASSWORD}@{closed}:notaport/x?sig={SIG}"):
        r = run_cli("--log-level", "debug", "add", "--links", url, check=False)
        assert r.returncode not in (0, 70) and "Traceback" not in r.stderr, r.stderr
        _clean(r.stdout + r.stderr, "add of an unreachable link")
