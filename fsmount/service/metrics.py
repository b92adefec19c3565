"""Prometheus text exposition of a mount's counters: a file the daemon rewrites, or a 127.0.0.1 port."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import trio

from fsmount.errors import FsmountError

log = logging.getLogger(__name__)

# Values that go up and down (or are a high-water mark), exported as gauges without `_total`;
# every other number the mounts' counters() produce is a monotonically increasing counter.
GAUGES = {
    "open_files",  # read-only and writable mounts
    "live_inodes",
    "directories",
    "inodes_numbered",
    "prefetch_inflight_bytes",
    "pack_inflight_bytes",
    "held_bytes",
    "largest_read",
    "pending",  # writable mounts: pending changes in the overlay
    "inodes",
}
HELP = {
    "reads": "FUSE read requests served",
    "bytes_served": "bytes returned to readers",
    "block_hits": "blocks found in the local cache",
    "block_misses": "blocks fetched from the store on demand",
    "objects_fetched": "objects downloaded from the store",
    "bytes_fetched": "bytes downloaded from the store",
    "cache_hits": "object lookups answered by the local cache",
    "cache_misses": "object lookups that went to the store",
    "errors": "reads that failed",
    "integrity_errors": "objects whose bytes did not match their hash",
    "open_files": "files open on the mount",
    "held_bytes": "verified block bytes kept in memory by open files",
    "largest_read": "largest read request the kernel sent, in bytes",
    "pending": "changes in the overlay not committed yet",
}


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n")


def _flatten(counters: dict[str, Any], prefix: str = "") -> dict[str, float]:
    out: dict[str, float] = {}
    for k, v in counters.items():
        if isinstance(v, bool):
            continue
        if isinstance(v, int | float):
            out[prefix + k] = v
        elif isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}_"))
    return out


def render(mounts: list[dict[str, Any]]) -> str:
    """Text format 0.0.4: one family per counter, one sample per mount."""
    families: dict[str, list[tuple[dict[str, str], float]]] = {}
    for m in mounts:
        version = m.get("version") or m.get("counters", {}).get("version", "")
        labels = {"mountpoint": str(m.get("mountpoint", "")), "version": str(version)}
        for name, value in _flatten(m.get("counters", {})).items():
            families.setdefault(name, []).append((labels, value))
    lines: list[str] = []
    for name in sorted(families):
        base = name.removeprefix("store_")
        gauge = name in GAUGES or base in GAUGES
        metric = f"fsmount_{name}" if gauge else f"fsmount_{name}_total"
        lines.append(f"# HELP {metric} {HELP.get(base, name.replace('_', ' '))}")
        lines.append(f"# TYPE {metric} {'gauge' if gauge else 'counter'}")
        for labels, value in families[name]:
            lab = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
            lines.append(f"{metric}{{{lab}}} {value:g}")
    return "\n".join(lines) + "\n"


def write_file(path: str, text: str) -> None:
    """Atomically replace the metrics file (node_exporter's textfile collector reads it)."""
    tmp = f"{path}.tmp{os.getpid()}"
    with open(tmp, "w") as f:
        f.write(text)
    os.replace(tmp, path)


async def write_periodically(path: str, snapshot: Callable[[], dict[str, Any]], every: float = 10.0) -> None:
    while True:
        try:
            write_file(path, render([snapshot()]))
        except OSError as e:
            log.warning("could not write metrics file %s: %s", path, e)
        await trio.sleep(every)


async def listen_http(port: int) -> list[trio.SocketListener]:
    """Listeners on 127.0.0.1:port (loopback only, never a public address); one line if it cannot."""
    try:
        return await trio.open_tcp_listeners(port, host="127.0.0.1")
    except OSError as e:
        raise FsmountError(f"cannot serve metrics on 127.0.0.1:{port}: {e.strerror or e}") from None


async def serve_http(listeners: list[trio.SocketListener], snapshot: Callable[[], dict[str, Any]]) -> None:
    """Answer GET /metrics on `listeners` (from listen_http) until cancelled."""

    async def handle(stream: trio.SocketStream) -> None:
        try:
            with trio.move_on_after(5):
                request = b""
                while b"\r\n\r\n" not in request and len(request) < 8192:
                    chunk = await stream.receive_some(4096)
                    if not chunk:
                        break
                    request += chunk
                line = request.split(b"\r\n", 1)[0].split()
                if len(line) >= 2 and line[0] == b"GET" and line[1].split(b"?")[0] in (b"/metrics", b"/"):
                    body = render([snapshot()]).encode()
                    head = (
                        f"HTTP/1.0 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\n"
                        f"Content-Length: {len(body)}\r\n\r\n"
                    ).encode()
                else:
                    body, head = b"not found\n", b"HTTP/1.0 404 Not Found\r\nContent-Length: 10\r\n\r\n"
                await stream.send_all(head + body)
        except Exception:
            log.debug("metrics connection failed", exc_info=True)
        finally:
            await stream.aclose()

    await trio.serve_listeners(handle, listeners)
