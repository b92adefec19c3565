"""Small helpers shared by tests: write file trees, hash trees, run the CLI."""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import subprocess
import sys
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

FSMOUNT = [sys.executable, "-m", "fsmount.cli"]


def write_tree(root: Path, files: dict[str, bytes | str]) -> Path:
    """Create files (str values become symlink targets when they start with '->')."""
    for rel, content in files.items():
        p = root / rel
        p.parent.mkdir(parents=True, exist_ok=True)
        if isinstance(content, str) and content.startswith("->"):
            os.symlink(content[2:], p)
        elif rel.endswith("/"):
            p.mkdir(parents=True, exist_ok=True)
        else:
            p.write_bytes(content.encode() if isinstance(content, str) else content)
    return root


def hash_tree(root: Path) -> dict[str, str]:
    """path -> sha256 for files, '->target' for symlinks, '/' for empty directories."""
    out: dict[str, str] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        rel_dir = os.path.relpath(dirpath, root)
        for name in filenames + [d for d in dirnames if os.path.islink(os.path.join(dirpath, d))]:
            full = os.path.join(dirpath, name)
            rel = os.path.normpath(os.path.join(rel_dir, name))
            if os.path.islink(full):
                out[rel] = "->" + os.readlink(full)
            else:
                with open(full, "rb") as f:
                    out[rel] = hashlib.sha256(f.read()).hexdigest()
        if not filenames and not dirnames and rel_dir != ".":
            out[os.path.normpath(rel_dir) + "/"] = "/"
    return out


def expected_hashes(files: dict[str, bytes | str]) -> dict[str, str]:
    out = {}
    for rel, content in files.items():
        if rel.endswith("/"):
            out[rel] = "/"
        elif isinstance(content, str) and content.startswith("->"):
            out[rel] = content
        else:
            data = content.encode() if isinstance(content, str) else content
            out[rel] = hashlib.sha256(data).hexdigest()
    return out


def run_cli(
    *args: str, check: bool = True, env: dict[str, str] | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run `fsmount ARGS` in a subprocess (the real console entry point, real exit codes)."""
    proc = subprocess.run(
        [*FSMOUNT, *args],
        capture_output=True,
        text=True,
        env=env or os.environ.copy(),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"fsmount {' '.join(args)} failed ({proc.returncode}): {proc.stderr}")
    return proc


def run_json(*args: str, **kw: Any) -> Any:
    return json.loads(run_cli(*args, "--json", **kw).stdout)


def count_objects(store_root: Path) -> tuple[int, int]:
    """(number, bytes) of content objects in a file:// store."""
    n = size = 0
    for dirpath, _, filenames in os.walk(store_root / "objects"):
        for f in filenames:
            if not f.startswith("."):
                n += 1
                size += os.path.getsize(os.path.join(dirpath, f))
    return n, size


def send_ranged(handler: BaseHTTPRequestHandler, data: bytes) -> None:
    """Answer a GET with `data`, or the part a `Range: bytes=A-B` header asks for (206), with an ETag:
    the HTTP server side of external-link tests."""
    m = re.fullmatch(r"bytes=(\d+)-(\d+)", handler.headers.get("Range", ""))
    body, status = data, 200
    if m:
        a, b = int(m[1]), min(int(m[2]), len(data) - 1)
        body, status = data[a:b + 1], 206
    handler.send_response(status)
    handler.send_header("ETag", '"' + hashlib.sha256(data).hexdigest()[:16] + '"')
    handler.send_header("Content-Length", str(len(body)))
    if m:
        handler.send_header("Content-Range", f"bytes {a}-{b}/{len(data)}")
    handler.end_headers()
    handler.wfile.write(body)


@contextlib.contextmanager
def serve_http(handler: type[BaseHTTPRequestHandler]) -> Iterator[int]:
    """A threaded HTTP server of `handler` on 127.0.0.1 (a free port, yielded), stopped afterwards."""
    srv = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=srv.serve_forever, daemon=True)
    thread.start()
    try:
        yield int(srv.server_address[1])
    finally:
        srv.shutdown()
        srv.server_close()
        thread.join()
