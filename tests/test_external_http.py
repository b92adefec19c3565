"""External files over HTTP: a real server on 127.0.0.1 with Range and ETag; changes and redirects refused."""

from __future__ import annotations

import os
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler
from pathlib import Path

import pytest

from tests.helpers import run_cli, run_json, send_ranged, serve_http

BLOCK = 64 * 1024
FILES: dict[str, bytes] = {}


class _Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: object) -> None:
        pass

    def do_GET(self) -> None:
        if self.path == "/moved.bin":
            self.send_response(302)
            self.send_header("Location", "/big.bin")
            self.end_headers()
            return
        data = FILES.get(self.path.lstrip("/"))
        if data is None:
            self.send_error(404)
            return
        send_ranged(self, data)


@pytest.fixture
def http_url(monkeypatch: pytest.MonkeyPatch, file_store_url: str) -> Iterator[str]:
    monkeypatch.setenv("FSMOUNT_STORE", file_store_url)
    FILES.clear()
    FILES["big.bin"] = os.urandom(3 * BLOCK + 5)
    with serve_http(_Handler) as port:
        yield f"http://127.0.0.1:{port}"


def test_http_links(http_url: str, tmp_path: Path) -> None:
    run_json("create", "--project", "web", "--name", "files", "--block-size", "64KiB")
    proc = run_cli("add", "--links", f"{http_url}/moved.bin", check=False)
    assert proc.returncode != 0 and "redirect" in proc.stderr and len(proc.stderr.splitlines()) == 1
    run_cli("add", "--links", f"{http_url}/big.bin")
    run_cli("close")
    copy = Path(run_cli("get", "web/files", "--cache-dir", str(tmp_path / "c1")).stdout.strip())
    assert (copy / "big.bin").read_bytes() == FILES["big.bin"]
    FILES["big.bin"] = os.urandom(len(FILES["big.bin"]))  # same size, new ETag
    proc = run_cli("get", "web/files", "--cache-dir", str(tmp_path / "c2"), check=False)
    assert proc.returncode == 1, proc.stderr
    assert f"{http_url}/big.bin changed since it was added" in proc.stderr, proc.stderr
