"""Where live mounts are registered (one JSON file each) and the control socket that serves counters.

The runtime folder is fsmount.config.runtime_dir() ($FSMOUNT_RUNTIME_DIR, else
$XDG_RUNTIME_DIR/fsmount, else data_home()/mounts). Each mount writes `<key>.json` there
(mountpoint, version, pid, socket) and its daemon log `<key>.log`. The socket is an abstract
unix socket (no path-length limit, nothing to clean up after a crash); it answers every
connection with one JSON object and closes. Only the mount's own user (or root) gets an answer,
and a client talks only to a daemon of its own user or root (SO_PEERCRED, both ways).
`ask()` is the client side: one request to the daemon of a mountpoint.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import socket
import stat
import struct
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from fsmount import config
from fsmount.errors import FsmountError, UsageError
from fsmount.fs.mountpoint import is_mounted

if TYPE_CHECKING:
    import trio

log = logging.getLogger(__name__)


def runtime_dir() -> Path:
    d = config.runtime_dir()
    d.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = d.lstat()
    if not stat.S_ISDIR(st.st_mode) or st.st_uid != os.geteuid():
        raise FsmountError(f"runtime folder {d} is not a folder of yours")
    return config.private_dir(d, "runtime folder")


def mount_key(mountpoint: str) -> str:
    return hashlib.sha256(os.path.abspath(mountpoint).encode()).hexdigest()[:16]


def info_path(mountpoint: str) -> Path:
    return runtime_dir() / f"{mount_key(mountpoint)}.json"


def log_path(mountpoint: str) -> Path:
    return runtime_dir() / f"{mount_key(mountpoint)}.log"


def socket_name(mountpoint: str) -> str:
    return f"\0fsmount-{os.getuid()}-{mount_key(mountpoint)}-{os.getpid()}"


def write_info(mountpoint: str, info: dict[str, Any]) -> Path:
    path = info_path(mountpoint)
    tmp = path.with_suffix(f".tmp{os.getpid()}")
    tmp.write_text(json.dumps(info))
    tmp.replace(path)
    return path


def remove_info(mountpoint: str, pid: int) -> None:
    """Remove the registration if it is still ours."""
    path = info_path(mountpoint)
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text()).get("pid") == pid:
            path.unlink()


def pid_alive(pid: int) -> bool:
    """True if `pid` runs (a zombie nobody reaped yet counts as dead)."""
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        pass
    try:
        stat_line = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat_line.rpartition(")")[2].split()[0] != "Z"


def list_mounts() -> list[dict[str, Any]]:
    """Registered mounts; each gets 'alive' (daemon running) and 'mounted' (kernel mount present)."""
    out = []
    for p in sorted(runtime_dir().glob("*.json")):
        try:
            info = json.loads(p.read_text())
        except (OSError, ValueError):
            continue
        info["alive"] = pid_alive(int(info.get("pid", 0)))
        info["mounted"] = is_mounted(info.get("mountpoint", ""))
        if not info["alive"] and not info["mounted"]:
            with contextlib.suppress(OSError):
                p.unlink()  # a stale registration: the daemon and its mount are both gone
            continue
        out.append(info)
    return out


def find_mount(mountpoint: str) -> dict[str, Any] | None:
    want = os.path.abspath(mountpoint)
    for info in list_mounts():
        if info.get("mountpoint") == want:
            return info
    return None


def read_info(mountpoint: str) -> dict[str, Any] | None:
    try:
        return json.loads(info_path(mountpoint).read_text())
    except (OSError, ValueError):
        return None


def request(sock_name: str, payload: dict[str, Any], timeout: float | None = 5.0) -> dict[str, Any]:
    """Send one JSON request line to a daemon and return its JSON answer (None: wait forever)."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(timeout)
        s.connect(sock_name)
        _check_server(s, sock_name)
        s.sendall(json.dumps(payload).encode() + b"\n")
        s.shutdown(socket.SHUT_WR)
        chunks = []
        while data := s.recv(65536):
            chunks.append(data)
    return json.loads(b"".join(chunks))


def _check_server(sock: socket.socket, sock_name: str) -> None:
    """Abstract socket names are not protected by file modes: anyone may bind one first. Talk only
    to a daemon of our own user or root, as the daemon answers only its user or root."""
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    if uid not in (os.geteuid(), 0):
        raise FsmountError(f"control socket {sock_name.lstrip(chr(0))!r} is served by uid {uid}, not by"
                           " you or root: not a daemon of yours")


def query(sock_name: str, timeout: float = 5.0) -> dict[str, Any]:
    """Ask a daemon for its counters."""
    return request(sock_name, {"op": "status"}, timeout)


def ask(mountpoint: str, payload: dict[str, Any], timeout: float | None = 5.0) -> dict[str, Any]:
    """Send one request to the daemon of the fsmount mount at `mountpoint`; its refusal is raised.

    A refusal keeps the daemon's message and exit code; a path that is no fsmount mount is a
    UsageError, a dead or silent daemon an FsmountError, each one line.
    """
    info = find_mount(mountpoint)
    if info is None:
        raise UsageError(f"{os.path.abspath(mountpoint)} is not an fsmount mount")
    if not info.get("alive", True):
        raise FsmountError(f"the daemon of {info['mountpoint']} is not running: mount it again")
    try:
        reply = request(info["socket"], payload, timeout=timeout)
    except (OSError, ValueError) as e:
        raise FsmountError(f"the daemon of {info['mountpoint']} does not answer: {e}") from None
    if not reply.get("ok", payload.get("op", "status") == "status"):
        code = int(reply.get("exit_code", 1))
        err = (UsageError if code == UsageError.exit_code else FsmountError)(
            reply.get("error") or "the daemon refused the request")
        err.exit_code = code
        raise err
    return reply


def _peer_uid(sock: trio.socket.SocketType) -> int:
    creds = sock.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, struct.calcsize("3i"))
    _, uid, _ = struct.unpack("3i", creds)
    return uid


Handler = Callable[[dict[str, Any]], Awaitable[dict[str, Any]]]
REQUEST_WAIT = 2.0  # seconds a connection may take to send its request line


async def _read_request(stream: trio.SocketStream) -> dict[str, Any]:
    """One JSON line (or nothing: a client that only listens gets the counters)."""
    import trio  # only a daemon serves: trio costs the CLI ~0.7 s of start-up (see serve)

    buf = b""
    with trio.move_on_after(REQUEST_WAIT):
        while b"\n" not in buf and len(buf) < 65536:
            data = await stream.receive_some(65536)
            if not data:
                break
            buf += data
    try:
        req = json.loads(buf.split(b"\n", 1)[0] or b"{}")
    except ValueError:
        return {"op": "invalid"}
    return req if isinstance(req, dict) else {"op": "invalid"}


async def _answer(req: dict[str, Any], snapshot: Callable[[], dict[str, Any]],
                  handlers: dict[str, Handler]) -> dict[str, Any]:
    op = req.get("op", "status")
    if op == "status":
        return snapshot()
    handler = handlers.get(op)
    if handler is None:
        return {"ok": False, "error": f"this mount does not support {op!r}"
                f"{' (it is read-only)' if not handlers else ''}", "exit_code": 2}
    try:
        return {"ok": True, **await handler(req)}
    except FsmountError as e:
        return {"ok": False, "error": str(e), "exit_code": e.exit_code}
    except Exception as e:
        log.exception("control request %r failed", op)
        return {"ok": False, "error": f"internal error: {type(e).__name__}: {e}", "exit_code": 70}


async def serve(sock_name: str, snapshot: Callable[[], dict[str, Any]],
                handlers: dict[str, Handler] | None = None,
                task_status: trio.TaskStatus[None] | None = None) -> None:
    """Answer each connection's request (one JSON line; none means status) with JSON, until cancelled.

    `{"op": "status"}` answers `snapshot()`; other ops go to `handlers` (a writable mount's
    commit, diff, discard), whose answers carry `"ok": true`, or `"ok": false` and `"error"`.
    trio is imported here, not at the top: every CLI command imports this module (mount
    registrations, `ask`), only a mount's daemon serves, and trio is ~0.7 s of the CLI's start-up.
    """
    import trio

    sock = trio.socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    await sock.bind(sock_name)
    sock.listen(16)
    listener = trio.SocketListener(sock)
    (task_status or trio.TASK_STATUS_IGNORED).started()
    me = os.getuid()

    async def handle(stream: trio.SocketStream) -> None:
        try:
            if _peer_uid(stream.socket) not in (me, 0):
                return
            reply = await _answer(await _read_request(stream), snapshot, handlers or {})
            await stream.send_all(json.dumps(reply, default=str).encode())
        except Exception:
            log.debug("control connection failed", exc_info=True)
        finally:
            await stream.aclose()

    await trio.serve_listeners(handle, [listener])
