"""Mountpoint checks and unmounting: /proc/self/mountinfo, fusermount3 -u then -z."""

from __future__ import annotations

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


def unmount(path: str | os.PathLike[str]) -> None:
    """Unmount `path`: fusermount3 -u, then a lazy -z if it is busy or its daemon is gone."""
    p = os.path.abspath(path)
    if not is_mounted(p):
        raise UsageError(f"{p} is not mounted")
    tool = shutil.which("fusermount3")
    attempts = [[tool, "-u", p], [tool, "-u", "-z", p]] if tool else []
    if os.getuid() == 0 and shutil.which("umount"):
        attempts += [["umount", p], ["umount", "-l", p]]
    last = "no fusermount3 or umount found"
    for cmd in attempts:
        r = subprocess.run(cmd, capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=30)
        if r.returncode == 0 and not is_mounted(p):
            return
        last = (r.stderr.strip().splitlines() or [f"exit {r.returncode}"])[-1]
        log.debug("%s: %s", " ".join(cmd), last)
    raise FsmountError(f"cannot unmount {p}: {last}")
