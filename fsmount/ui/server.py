"""Serving the pages: bind (loopback unless a token guards another host), print the URL, run uvicorn."""

from __future__ import annotations

import socket
import sys
import webbrowser
from urllib.parse import quote

import uvicorn

from fsmount.api.workspace import Workspace
from fsmount.errors import UsageError
from fsmount.ui.app import create_app
from fsmount.ui.auth import is_loopback
from fsmount.ui.preview import DEFAULT_LIMIT


def check_bind(host: str, token: str | None) -> None:
    """A host other than loopback only with a token: the pages show every dataset of the store."""
    if not is_loopback(host) and not token:
        raise UsageError(f"--host {host} is reachable from other machines: give --token too")
    if token is not None and len(token) < 8:
        raise UsageError("--token: use at least 8 characters")


def bind(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, port))
    except OSError as e:
        sock.close()
        raise UsageError(f"cannot listen on {host}:{port}: {e.strerror or e}") from None
    sock.listen(128)
    sock.set_inheritable(True)
    return sock


def serve(ws: Workspace, host: str = "127.0.0.1", port: int = 8765, *, token: str | None = None,
          open_browser: bool = False, preview_limit: int = DEFAULT_LIMIT) -> None:
    """Serve until interrupted. The first line on stdout is the URL (with the token, when there is one)."""
    check_bind(host, token)
    sock = bind(host, port)
    shown = f"[{host}]" if ":" in host else host
    url = f"http://{shown}:{sock.getsockname()[1]}/" + (f"?token={quote(token)}" if token else "")
    print(f"fsmount ui: serving {ws.store_url} on {url}", flush=True)
    if open_browser:
        webbrowser.open(url)
    app = create_app(ws, token=token, preview_limit=preview_limit)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off",
                            server_header=False, timeout_graceful_shutdown=2)
    try:
        uvicorn.Server(config).run(sockets=[sock])
    finally:
        sock.close()
        sys.stdout.flush()
