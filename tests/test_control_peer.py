"""The control-socket client talks only to a daemon of its own user or root: abstract socket names
carry no file modes, so another user could bind a mount's name first and answer in its place."""

from __future__ import annotations

import os
import secrets
import socket

import pytest

from fsmount.errors import FsmountError
from fsmount.fs import control

NOBODY = 65534


def _serve_once_as(uid: int, name: str) -> tuple[int, int]:
    """A child process that binds `name` as `uid`, says so on a pipe, and answers one request."""
    ready_r, ready_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        try:
            os.close(ready_r)
            if uid != os.getuid():
                os.setgid(uid)
                os.setuid(uid)
            with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as srv:
                srv.bind(name)
                srv.listen(1)
                os.write(ready_w, b"1")
                conn, _ = srv.accept()
                with conn:
                    conn.recv(65536)
                    conn.sendall(b'{"ok": true, "fake": true}')
        finally:
            os._exit(0)
    os.close(ready_w)
    return pid, ready_r


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to serve as another uid")
def test_a_socket_served_by_another_user_is_refused() -> None:
    name = f"\0fsmount-test-{secrets.token_hex(6)}"
    pid, ready = _serve_once_as(NOBODY, name)
    try:
        assert os.read(ready, 1) == b"1"
        with pytest.raises(FsmountError, match="served by uid 65534"):
            control.request(name, {"op": "status"})
    finally:
        os.close(ready)
        os.kill(pid, 9)
        os.waitpid(pid, 0)


def test_a_socket_of_our_own_user_answers() -> None:
    name = f"\0fsmount-test-{secrets.token_hex(6)}"
    pid, ready = _serve_once_as(os.getuid(), name)
    try:
        assert os.read(ready, 1) == b"1"
        assert control.request(name, {"op": "status"}) == {"ok": True, "fake": True}
    finally:
        os.close(ready)
        os.waitpid(pid, 0)
