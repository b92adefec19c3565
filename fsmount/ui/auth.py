"""Who may ask: a token on every request (header or cookie) when one is set, loopback Host names otherwise."""

from __future__ import annotations

import hmac
from typing import Any
from urllib.parse import urlencode

from starlette.requests import Request
from starlette.responses import PlainTextResponse, RedirectResponse
from starlette.types import ASGIApp, Receive, Scope, Send

COOKIE = "fsmount_ui_token"
HEADER = "x-fsmount-token"
LOOPBACK_NAMES = ("127.0.0.1", "localhost", "::1")


def is_loopback(host: str) -> bool:
    return host in LOOPBACK_NAMES or host.startswith("127.")


def same(given: str | None, token: str) -> bool:
    """Constant-time comparison (hmac.compare_digest), false for a missing value."""
    return given is not None and hmac.compare_digest(given.encode(), token.encode())


def _host_name(host_header: str) -> str:
    if host_header.startswith("["):  # [::1]:8000
        return host_header[1:].split("]", 1)[0]
    return host_header.rsplit(":", 1)[0] if host_header.count(":") == 1 else host_header


class Gate:
    """ASGI middleware. With a token: the `x-fsmount-token` header, `Authorization: Bearer`, or the
    cookie that a first visit with `?token=` sets (then redirected to the same page without it).
    Without a token (loopback only): a Host header that is not a loopback name is refused, so a
    web page elsewhere cannot reach this server through DNS rebinding."""

    def __init__(self, app: ASGIApp, token: str | None) -> None:
        self.app = app
        self.token = token

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request = Request(scope)
        response: Any = None
        if self.token is None:
            if not is_loopback(_host_name(request.headers.get("host", ""))):
                response = PlainTextResponse("fsmount ui: this server answers loopback names only\n", 403)
        else:
            auth = request.headers.get("authorization", "")
            bearer = auth[7:] if auth.lower().startswith("bearer ") else None
            given = request.headers.get(HEADER) or bearer or request.cookies.get(COOKIE)
            if not same(given, self.token):
                if same(request.query_params.get("token"), self.token):
                    rest = [(k, v) for k, v in request.query_params.multi_items() if k != "token"]
                    url = request.url.path + (f"?{urlencode(rest)}" if rest else "")
                    response = RedirectResponse(url, 303)
                    response.set_cookie(COOKIE, self.token, httponly=True, samesite="strict")
                else:
                    response = PlainTextResponse("fsmount ui: a valid token is needed (?token=...)\n", 401)
        if response is not None:
            await response(scope, receive, send)
            return
        await self.app(scope, receive, send)
