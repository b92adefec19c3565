"""Background mounts: start the daemon as a detached process and return once the mount is live.

`Mount` is a live mount seen from Python (made here, or found by its mountpoint): its counters,
and a writable mount's commit, diff and discard, asked of its daemon over the control socket.
"""

from __future__ import annotations

import contextlib
import logging
import os
import select
import signal
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

from fsmount import config
from fsmount.errors import FsmountError, UsageError
from fsmount.fs import control
from fsmount.fs.mountpoint import check_fuse, check_mountpoint, is_mounted, unmount
from fsmount.service.request import MountRequest

log = logging.getLogger(__name__)

# -P: the current folder is not put on sys.path, so a ./fsmount folder (a checkout of this
# repository, say) cannot shadow the installed package in the daemon.
CLI = [sys.executable, "-P", "-m", "fsmount.cli"]


def daemon_argv(req: MountRequest) -> list[str]:
    """The `fsmount mount ... --foreground` command line that runs the daemon for `req`."""
    return ["mount", *req.cli_args(), "--foreground"]


def mount_argv(ref: str, mountpoint: str, **opts: Any) -> list[str]:
    """The daemon's command line for a mount given as keyword options (see MountRequest), validated."""
    opts.setdefault("log_level", "info")
    return daemon_argv(MountRequest(ref, mountpoint, **opts).validate())


def start(req: MountRequest, wait: float = 60.0) -> int:
    """Mount `req` (validated) with a background daemon; its pid once the mount is live.

    From a single-threaded process (the CLI) the daemon is a fork of this process: it already has
    Python started and most modules imported, which was most of what `fsmount mount` waited for
    (docs/BENCHMARKS.md). With other threads running (forking them is unsafe) it is a new process.
    """
    if threading.active_count() > 1 or config.exec_daemon():
        return start_background(daemon_argv(req), req.mountpoint, wait)
    mountpoint = os.path.abspath(req.mountpoint)
    check_fuse()
    check_mountpoint(mountpoint)  # fail fast; the daemon checks again
    logfile = str(control.log_path(mountpoint))
    r, w = os.pipe()
    logfd = _open_log(logfile)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    pid = os.fork()
    if pid == 0:  # the daemon: never returns into the caller
        code = 70
        try:
            os.close(r)
            os.setsid()
            null = os.open(os.devnull, os.O_RDONLY)
            os.dup2(null, 0)
            os.dup2(logfd, 1)
            os.dup2(logfd, 2)
            os.close(null)
            os.close(logfd)
            # Imported here, in the daemon only: pyfuse3 and the FUSE core are not the CLI's business.
            from fsmount.fs.daemon import run_foreground

            code = run_foreground(req, w)
        except BaseException:
            with contextlib.suppress(Exception):
                traceback.print_exc()
        finally:
            os._exit(code)
    os.close(w)
    os.close(logfd)

    def gone() -> bool:
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            return done != 0
        return True

    def kill() -> None:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(ChildProcessError):
            os.waitpid(pid, 0)

    def reap(timeout: float) -> int | None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with contextlib.suppress(ChildProcessError):
                done, status = os.waitpid(pid, os.WNOHANG)
                if done:
                    return os.waitstatus_to_exitcode(status)
                time.sleep(0.02)
                continue
            return None
        return None

    return _await_ready(r, pid, mountpoint, logfile, wait, gone, kill, reap)


def _last_log_line(path: str) -> str:
    try:
        with open(path, "rb") as f:
            f.seek(max(0, os.path.getsize(path) - 4096))
            lines = [ln for ln in f.read().decode(errors="replace").splitlines() if ln.strip()]
    except OSError:
        return ""
    return lines[-1] if lines else ""


def _open_log(logfile: str) -> int:
    # 0600, never through a symlink: the log holds paths and errors, and the daemon may be root.
    logfd = os.open(logfile, os.O_WRONLY | os.O_CREAT | os.O_APPEND | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    if os.fstat(logfd).st_uid == os.geteuid():
        os.fchmod(logfd, 0o600)  # a log made by an older fsmount was 0644
    return logfd


def start_background(argv: list[str], mountpoint: str, wait: float = 60.0) -> int:
    """Run the daemon detached; return its pid once the mount is live, or raise with its one-line error."""
    mountpoint = os.path.abspath(mountpoint)
    check_fuse()
    check_mountpoint(mountpoint)  # fail fast; the daemon checks again
    logfile = str(control.log_path(mountpoint))
    r, w = os.pipe()
    with open(_open_log(logfile), "ab") as logf:
        proc = subprocess.Popen([*CLI, *argv, "--ready-fd", str(w)], pass_fds=(w,), stdin=subprocess.DEVNULL,
                                stdout=logf, stderr=logf, start_new_session=True)
    os.close(w)

    def kill() -> None:
        proc.kill()
        proc.wait()

    def reap(timeout: float) -> int | None:
        with contextlib.suppress(subprocess.TimeoutExpired):
            return proc.wait(timeout)
        return None

    return _await_ready(r, proc.pid, mountpoint, logfile, wait, lambda: proc.poll() is not None, kill, reap)


def _await_ready(r: int, pid: int, mountpoint: str, logfile: str, wait: float, gone: Callable[[], bool],
                 kill: Callable[[], None], reap: Callable[[float], int | None]) -> int:
    """Read the daemon's one line from pipe `r`: its pid once live, else raise with its error."""
    buf = b""
    deadline = time.monotonic() + wait
    try:
        while b"\n" not in buf:
            left = deadline - time.monotonic()
            if left <= 0:
                break
            ready, _, _ = select.select([r], [], [], min(left, 0.5))
            if ready:
                chunk = os.read(r, 4096)
                if not chunk:
                    break
                buf += chunk
            elif gone():
                break
    finally:
        os.close(r)
    line = buf.decode(errors="replace").strip()
    if line == "OK":
        while not is_mounted(mountpoint) and time.monotonic() < deadline:
            time.sleep(0.01)
        return pid
    if line.startswith("ERR "):
        reap(10)
        code, _, why = line[4:].partition(" ")  # 'ERR <exit code> <message>'
        err = FsmountError(why if code.isdigit() else line[4:])
        err.exit_code = int(code) if code.isdigit() else 1
        raise err
    # No answer: the daemon died or hangs. Leave nothing behind.
    status = reap(0)
    if status is None:
        kill()
    if is_mounted(mountpoint):
        with contextlib.suppress(FsmountError):
            unmount(mountpoint)
    why = _last_log_line(logfile) or f"exit status {status}"
    raise FsmountError(f"the mount daemon did not start: {why} (log: {logfile})")


def wait_for_exit(pid: int, timeout: float = 10.0) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not control.pid_alive(pid):
            return True
        with contextlib.suppress(ChildProcessError):
            done, _ = os.waitpid(pid, os.WNOHANG)
            if done:
                return True
        time.sleep(0.02)
    return False


def umount(mountpoint: str, wait: float = 10.0, lazy: bool = False) -> dict[str, Any]:
    """Unmount (also a mount whose daemon died) and wait for the daemon to exit.

    A busy mount is refused with MountBusy naming its users, like umount(8), unless `lazy`
    (a mount whose daemon died is always let go lazily: nothing can be served from it). Returns
    {'mountpoint', 'pending', 'overlay'}: a writable mount's pending changes stay in its overlay.
    """
    info = control.find_mount(mountpoint)
    pid = int(info.get("pid", 0)) if info else 0
    pending, overlay = 0, None
    alive = bool(pid) and control.pid_alive(pid)
    if alive:
        with contextlib.suppress(FsmountError, OSError):
            counters = control.ask(mountpoint, {"op": "status"}).get("counters", {})
            if counters.get("writable"):
                pending, overlay = int(counters.get("pending", 0)), counters.get("overlay")
    unmount(mountpoint, lazy=lazy or not alive)
    if pid:
        wait_for_exit(pid, wait)
    return {"mountpoint": os.path.abspath(mountpoint), "pending": pending, "overlay": overlay}


@dataclass
class Mount:
    """A live fsmount mount: made by `mounted()`, or found with `Mount.find(mountpoint)`."""

    path: str
    pid: int

    @classmethod
    def find(cls, mountpoint: str | os.PathLike[str]) -> Mount:
        """The fsmount mount at `mountpoint` (made by the CLI, a unit, or Python); UsageError if none."""
        info = control.find_mount(os.fspath(mountpoint))
        if info is None:
            raise UsageError(f"{os.path.abspath(mountpoint)} is not an fsmount mount")
        return cls(str(info["mountpoint"]), int(info.get("pid", 0)))

    def info(self) -> dict[str, Any]:
        """The registration: mountpoint, version, name, store, pid, log, alive, and more."""
        info = control.find_mount(self.path)
        if info is None:
            raise UsageError(f"{self.path} is not an fsmount mount")
        return info

    def status(self) -> dict[str, Any]:
        """The daemon's answer: mountpoint, pid, ref, store, uptime and its counters."""
        return control.ask(self.path, {"op": "status"})

    def diff(self) -> dict[str, Any]:
        """A writable mount's pending changes: {'added': [...], 'modified': [...], 'removed': [...]}."""
        reply = control.ask(self.path, {"op": "diff"}, timeout=None)
        return {k: reply.get(k, []) for k in ("added", "modified", "removed")} | {
            "mountpoint": reply.get("mountpoint", self.path), "version": reply.get("version")}

    def commit(self, message: str = "", *, version: str | None = None, tags: list[str] | None = None,
               publish: bool = False, timeout: float | None = None) -> dict[str, Any]:
        """Turn the pending changes into a child version; the mount moves onto it.

        Returns the new version's id, version, parent, files, bytes and upload counts; 'id' is
        None when there was nothing to commit. Waits for the commit however long (timeout None).
        """
        reply = control.ask(self.path, {"op": "commit", "message": message, "version": version,
                                        "tags": list(tags or []), "publish": publish}, timeout=timeout)
        reply.pop("ok", None)
        return reply

    def discard(self) -> int:
        """Drop every pending change; the number dropped."""
        return int(control.ask(self.path, {"op": "discard"}, timeout=None).get("discarded", 0))


@contextlib.contextmanager
def mounted(ref: str, path: str | os.PathLike[str], **opts: Any) -> Iterator[Mount]:
    """`with mounted(REF, PATH) as m:` mounts for the block, then unmounts.

    Options are MountRequest's fields (store=, cache_dir=, write=True, timeout=...), checked as
    `fsmount mount` checks them.
    """
    mp = os.path.abspath(path)
    pid = start_background(mount_argv(ref, mp, **opts), mp)
    try:
        yield Mount(mp, pid)
    finally:
        if is_mounted(mp):
            unmount(mp)
        wait_for_exit(pid)
