"""Mountpoint checks and unmounting: /proc/self/mountinfo, fusermount3 -u (then -z if asked)."""

from __future__ import annotations

import errno as _errno
import logging
import os
import shutil
import stat
import subprocess
from pathlib import Path

from fsmount.errors import FsmountError, UsageError

log = logging.getLogger(__name__)


class FuseUnavailable(FsmountError):
    """This machine cannot mount FUSE filesystems."""

    exit_code = 3


def _unescape(field: str) -> str:
    """mountinfo escapes space, tab, newline and backslash as octal."""
    out, i = [], 0
    while i < len(field):
        code = field[i + 1:i + 4]
        if field[i] == "\\" and len(code) == 3 and code.isdigit():
            out.append(chr(int(code, 8)))
            i += 4
        else:
            out.append(field[i])
            i += 1
    return "".join(out)


def mounted_paths() -> dict[str, str]:
    """Mount point -> filesystem type, from /proc/self/mountinfo (dead FUSE mounts included)."""
    out: dict[str, str] = {}
    try:
        text = Path("/proc/self/mountinfo").read_text()
    except OSError:
        return out
    for line in text.splitlines():
        left, _, right = line.partition(" - ")
        fields = left.split()
        if len(fields) >= 5 and right:
            out[_unescape(fields[4])] = right.split()[0]
    return out


def is_mounted(path: str | os.PathLike[str]) -> bool:
    """True if something is mounted at `path`, even a FUSE mount whose daemon has died."""
    p = os.path.abspath(path)
    return p in mounted_paths() or os.path.realpath(p) in mounted_paths()


def check_fuse() -> None:
    if not os.path.exists("/dev/fuse"):
        raise FuseUnavailable("/dev/fuse is missing: load the fuse module (or give the container /dev/fuse)")
    if not os.access("/dev/fuse", os.R_OK | os.W_OK) and shutil.which("fusermount3") is None:
        raise FuseUnavailable("cannot open /dev/fuse and fusermount3 is not installed (apt install fuse3)")
    if os.getuid() != 0 and shutil.which("fusermount3") is None:
        raise FuseUnavailable("fusermount3 is not installed (apt install fuse3)")


def check_mountpoint(path: str | os.PathLike[str]) -> str:
    """The absolute mountpoint if it is an empty directory nothing is mounted on; else UsageError."""
    p = os.path.abspath(path)
    if is_mounted(p):
        raise UsageError(f"{p} is already mounted (fsmount umount {p} first)")
    try:
        st = os.stat(p)
    except FileNotFoundError:
        raise UsageError(f"mountpoint {p} does not exist") from None
    except OSError as e:
        raise UsageError(f"mountpoint {p}: {e.strerror}") from None
    if not stat.S_ISDIR(st.st_mode):
        raise UsageError(f"mountpoint {p} is not a directory")
    try:
        if any(os.scandir(p)):
            raise UsageError(f"mountpoint {p} is not empty")
    except PermissionError:
        raise UsageError(f"mountpoint {p} cannot be read") from None
    return p


class MountBusy(FsmountError):
    """The mount is in use (open files, a working directory): umount(8)'s "target is busy"."""

    errno = _errno.EBUSY
    exit_code = 32  # umount(8)'s "mount failure"


def users_of(path: str) -> list[tuple[int, str]]:
    """(pid, command) of the processes with a working directory, root, open file or map under `path`."""
    prefix = path.rstrip("/") + "/"

    def inside(link: str) -> bool:
        return link == path or link.startswith(prefix)

    found = []
    for pid in (int(d) for d in os.listdir("/proc") if d.isdigit()):
        base = f"/proc/{pid}"
        links = [f"{base}/cwd", f"{base}/root", f"{base}/exe"]
        try:
            links += [f"{base}/fd/{fd}" for fd in os.listdir(f"{base}/fd")]
        except OSError:
            pass
        hit = False
        for link in links:
            try:
                if inside(os.readlink(link)):
                    hit = True
                    break
            except OSError:
                continue
        if not hit:
            try:
                with open(f"{base}/maps", errors="replace") as maps:
                    hit = any(inside(line.split(None, 5)[-1].strip()) for line in maps if "/" in line)
            except OSError:
                pass
        if hit:
            try:
                with open(f"{base}/comm") as comm:
                    name = comm.read().strip()
            except OSError:
                name = "?"
            found.append((pid, name))
    return found


def unmount(path: str | os.PathLike[str], lazy: bool = True) -> None:
    """Unmount `path`: fusermount3 -u (umount as root); if that fails, a lazy -z when `lazy`.

    Without `lazy`, a busy mount stays mounted and MountBusy names the processes using it.
    """
    p = os.path.abspath(path)
    if not is_mounted(p):
        raise UsageError(f"{p} is not mounted")
    tool = shutil.which("fusermount3")
    plain = [[tool, "-u", p]] if tool else []
    forced = [[tool, "-u", "-z", p]] if tool else []
    if os.getuid() == 0 and shutil.which("umount"):
        plain.append(["umount", p])
        forced.append(["umount", "-l", p])
    last = "no fusermount3 or umount found"
    busy = False
    for cmd in plain + (forced if lazy else []):
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        if r.returncode == 0 and not is_mounted(p):
            return
        last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        busy = busy or "busy" in last.lower()
        log.debug("%s: %s", " ".join(cmd), last)
    if busy and not lazy:
        users = [f"{pid} ({name})" for pid, name in users_of(p)]
        who = f"; in use by {', '.join(users[:10])}{' ...' if len(users) > 10 else ''}" if users else ""
        raise MountBusy(f"umount: {p}: target is busy{who} (or use --lazy)")
    raise FsmountError(f"cannot unmount {p}: {last}")
