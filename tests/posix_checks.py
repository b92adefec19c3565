"""POSIX assertions per syscall family, written for fsmount (the families pjdfstest covers).

Each `check_*` runs in a fresh, empty, world-searchable folder, asserts what POSIX (as Linux
implements it) promises, and returns what it observed in a form that does not depend on the
filesystem (errnos, modes, link counts, orderings of times, "same inode"), so a test can also
require a writable mount to observe exactly what a local folder does. `as_uid` runs a call
as another user in a forked child (os.setgid/os.setuid), for the permission checks.
"""

from __future__ import annotations

import os
import pickle
import stat
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

NOBODY = 65534
Obs = list[tuple[str, object]]


def tick() -> None:
    """Let the kernel's coarse clock (file times) move on, so that two timestamps can differ."""
    time.sleep(0.02)


def err(fn: Callable[..., Any], *args: Any, **kw: Any) -> int:
    """0 if the call succeeds, else its errno."""
    try:
        fn(*args, **kw)
    except OSError as e:
        return e.errno or -1
    return 0


def as_uid(uid: int, fn: Callable[..., Any], *args: Any, gid: int | None = None) -> Any:
    """Run `fn(*args)` as `uid` (and `gid`, default the same number) in a forked child; its result
    (or, for an OSError, ("errno", n)) comes back pickled through a pipe."""
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns into pytest
        code = 0
        try:
            os.close(r)
            os.setgroups([])
            os.setgid(uid if gid is None else gid)
            os.setuid(uid)
            try:
                out: Any = fn(*args)
            except OSError as e:
                out = ("errno", e.errno)
            os.write(w, pickle.dumps(out))
        except BaseException:
            code = 1
        finally:
            os._exit(code)
    os.close(w)
    with os.fdopen(r, "rb") as f:
        data = f.read()
    _, status = os.waitpid(pid, 0)
    assert os.waitstatus_to_exitcode(status) == 0, "the child failed before it could answer"
    return pickle.loads(data)


def _ct(p: Path) -> int:
    return os.lstat(p).st_ctime_ns


def _mt(p: Path) -> int:
    return os.lstat(p).st_mtime_ns


def _mode(p: Path) -> int:
    return os.lstat(p).st_mode


def _new(p: Path, mode: int = 0o644, data: bytes = b"") -> Path:
    fd = os.open(p, os.O_CREAT | os.O_EXCL | os.O_WRONLY, mode)
    os.write(fd, data)
    os.close(fd)
    os.chmod(p, mode)
    return p


# -- the families ---------------------------------------------------------------------------

def check_chmod(d: Path) -> Obs:
    f = _new(d / "f")
    ct, mt = _ct(f), _mt(f)
    tick()
    os.chmod(f, 0o4751)
    assert stat.S_IMODE(_mode(f)) == 0o4751  # set-id bits are kept
    assert _ct(f) > ct and _mt(f) == mt  # chmod changes ctime, not mtime
    sub = d / "sub"
    sub.mkdir()
    ct = _ct(sub)
    tick()
    os.chmod(sub, 0o1777)
    assert stat.S_IMODE(_mode(sub)) == 0o1777 and _ct(sub) > ct
    os.symlink("f", d / "ln")
    os.chmod(d / "ln", 0o600)  # follows the symlink
    assert stat.S_IMODE(_mode(f)) == 0o600 and stat.S_ISLNK(_mode(d / "ln"))
    return [("chmod by another user", as_uid(NOBODY, err, os.chmod, str(f), 0o777)),
            ("chmod missing", err(os.chmod, d / "missing", 0o644)),
            ("mode", stat.S_IMODE(_mode(f)))]


def check_chown(d: Path) -> Obs:
    f = _new(d / "f", 0o6755)
    ct = _ct(f)
    tick()
    os.chown(f, NOBODY, NOBODY)
    st = os.lstat(f)
    assert (st.st_uid, st.st_gid) == (NOBODY, NOBODY) and st.st_ctime_ns > ct
    os.chown(f, -1, 0)  # -1: unchanged
    assert (os.lstat(f).st_uid, os.lstat(f).st_gid) == (NOBODY, 0)
    os.symlink("f", d / "ln")
    os.lchown(d / "ln", NOBODY, NOBODY)  # the link itself, not its target
    assert os.lstat(d / "ln").st_uid == NOBODY and os.lstat(f).st_gid == 0
    g = _new(d / "g")
    os.chown(g, NOBODY, NOBODY)
    return [("set-id bits after chown", stat.S_IMODE(_mode(f)) & 0o6000),
            ("owner gives away", as_uid(NOBODY, err, os.chown, str(g), 0, 0)),
            ("not owner", as_uid(NOBODY, err, os.chown, str(d / "missing"), NOBODY, NOBODY)),
            ("owner keeps", as_uid(NOBODY, err, os.chown, str(g), NOBODY, NOBODY))]


def check_link(d: Path) -> Obs:
    f = _new(d / "f", 0o640, b"data")
    ct = _ct(f)
    tick()
    os.link(f, d / "g")
    a, b = os.lstat(f), os.lstat(d / "g")
    assert a.st_ino == b.st_ino and (a.st_nlink, b.st_nlink) == (2, 2) and a.st_ctime_ns > ct
    (d / "sub").mkdir()
    os.link(d / "g", d / "sub" / "h")
    assert os.lstat(f).st_nlink == 3 and (d / "sub" / "h").read_bytes() == b"data"
    with open(d / "sub" / "h", "ab") as out:
        out.write(b"+more")
    assert f.read_bytes() == b"data+more"  # one file: a write through one name shows at all
    os.chmod(d / "g", 0o600)
    assert stat.S_IMODE(_mode(f)) == 0o600
    os.unlink(f)
    assert os.lstat(d / "g").st_nlink == 2
    os.mkfifo(d / "fifo")
    os.link(d / "fifo", d / "fifo2")
    assert os.lstat(d / "fifo").st_nlink == 2 and stat.S_ISFIFO(_mode(d / "fifo2"))
    return [("link to a directory", err(os.link, d / "sub", d / "dirlink")),
            ("link onto an existing name", err(os.link, d / "g", d / "sub" / "h")),
            ("link of a missing file", err(os.link, d / "missing", d / "x")),
            ("nlink after all", os.lstat(d / "g").st_nlink)]


def check_mkdir(d: Path) -> Obs:
    n, mt = os.lstat(d).st_nlink, _mt(d)
    tick()
    os.mkdir(d / "a", 0o751)
    assert stat.S_IMODE(_mode(d / "a")) == 0o751 and os.lstat(d / "a").st_nlink == 2
    assert os.lstat(d).st_nlink == n + 1 and _mt(d) > mt  # 2 + subdirectories; parent changed
    os.mkdir(d / "open", 0o777)
    os.chmod(d / "open", 0o777)
    assert as_uid(NOBODY, err, os.mkdir, str(d / "open" / "mine")) == 0
    assert os.lstat(d / "open" / "mine").st_uid == NOBODY
    os.mkdir(d / "sgid")
    os.chown(d / "sgid", 0, NOBODY)
    os.chmod(d / "sgid", 0o2775)
    os.mkdir(d / "sgid" / "child")
    st = os.lstat(d / "sgid" / "child")
    return [("exists", err(os.mkdir, d / "a")),
            ("parent missing", err(os.mkdir, d / "missing" / "x")),
            ("not permitted", as_uid(NOBODY, err, os.mkdir, str(d / "a" / "x"))),
            ("set-group-id dir: gid, mode bit", (st.st_gid, bool(st.st_mode & stat.S_ISGID)))]


def check_mkfifo(d: Path) -> Obs:
    mt = _mt(d)
    tick()
    os.mkfifo(d / "p", 0o640)
    assert stat.S_ISFIFO(_mode(d / "p")) and stat.S_IMODE(_mode(d / "p")) == 0o640 and _mt(d) > mt
    fd = os.open(d / "p", os.O_RDONLY | os.O_NONBLOCK)  # a fifo: the kernel's pipe
    w = os.open(d / "p", os.O_WRONLY | os.O_NONBLOCK)
    os.write(w, b"through the pipe")
    got = os.read(fd, 100)
    os.close(w)
    os.close(fd)
    return [("exists", err(os.mkfifo, d / "p")), ("read back", got)]


def check_mknod(d: Path) -> Obs:
    os.mknod(d / "reg", stat.S_IFREG | 0o600)
    assert stat.S_ISREG(_mode(d / "reg")) and os.lstat(d / "reg").st_size == 0
    os.mknod(d / "chr", stat.S_IFCHR | 0o644, os.makedev(1, 3))
    st = os.lstat(d / "chr")
    assert stat.S_ISCHR(st.st_mode) and st.st_rdev == os.makedev(1, 3)
    os.mknod(d / "blk", stat.S_IFBLK | 0o644, os.makedev(7, 0))
    assert stat.S_ISBLK(_mode(d / "blk"))
    os.mknod(d / "fifo", stat.S_IFIFO | 0o600)
    assert stat.S_ISFIFO(_mode(d / "fifo"))
    return [("exists", err(os.mknod, d / "reg", stat.S_IFREG | 0o600)),
            ("not permitted", as_uid(NOBODY, err, os.mknod, str(d / "x"), stat.S_IFCHR | 0o600, 0))]


def check_open(d: Path) -> Obs:
    t0 = time.time_ns()
    fd = os.open(d / "f", os.O_CREAT | os.O_EXCL | os.O_RDWR, 0o640)
    os.write(fd, b"hello")
    os.close(fd)
    st = os.lstat(d / "f")
    assert stat.S_IMODE(st.st_mode) == 0o640 and st.st_size == 5
    # a new file gets the time of its creation (not of a spare made ahead of time)
    assert all(abs(t - t0) < 1e9 for t in (st.st_mtime_ns, st.st_ctime_ns, st.st_atime_ns))
    mt = st.st_mtime_ns
    tick()
    os.close(os.open(d / "f", os.O_WRONLY | os.O_TRUNC))
    assert os.lstat(d / "f").st_size == 0 and _mt(d / "f") > mt
    os.chmod(d, 0o777)
    assert as_uid(NOBODY, err, lambda: os.close(os.open(d / "theirs", os.O_CREAT | os.O_WRONLY, 0o600))) == 0
    assert (os.lstat(d / "theirs").st_uid, os.lstat(d / "theirs").st_gid) == (NOBODY, NOBODY)
    os.chmod(d, 0o755)
    return [("exclusive", err(os.open, d / "f", os.O_CREAT | os.O_EXCL | os.O_RDWR)),
            ("directory for writing", err(os.open, d, os.O_WRONLY)),
            ("no permission", as_uid(NOBODY, err, os.open, str(d / "f"), os.O_RDONLY)),
            ("their own file", as_uid(NOBODY, err, lambda: os.close(os.open(d / "theirs", os.O_RDWR)))),
            ("missing", err(os.open, d / "missing", os.O_RDONLY)),
            ("through a file", err(os.open, d / "f" / "x", os.O_RDONLY))]


def check_rename(d: Path) -> Obs:
    f = _new(d / "f", data=b"1")
    ino = os.lstat(f).st_ino
    ct = _ct(f)
    tick()
    os.rename(f, d / "g")
    assert os.lstat(d / "g").st_ino == ino and not f.exists() and _ct(d / "g") >= ct
    os.link(d / "g", d / "h")
    os.rename(d / "g", d / "h")  # two names of one file: nothing happens
    assert (d / "g").exists() and os.lstat(d / "h").st_nlink == 2
    _new(d / "x", data=b"x")
    os.rename(d / "x", d / "h")  # replaces one name of the group
    assert os.lstat(d / "g").st_nlink == 1 and (d / "h").read_bytes() == b"x"
    (d / "a").mkdir()
    (d / "b").mkdir()
    (d / "a" / "sub").mkdir()
    os.rename(d / "a" / "sub", d / "b" / "sub")
    assert os.lstat(d / "a").st_nlink == 2 and os.lstat(d / "b").st_nlink == 3
    return [("dir over file", err(os.rename, d / "a", d / "g")),
            ("file over dir", err(os.rename, d / "g", d / "a")),
            ("dir into itself", err(os.rename, d / "b", d / "b" / "sub" / "x")),
            ("over a non-empty dir", err(os.rename, d / "a", d / "b")),
            ("missing", err(os.rename, d / "missing", d / "y"))]


def check_rmdir(d: Path) -> Obs:
    (d / "a").mkdir()
    (d / "a" / "b").mkdir()
    n = os.lstat(d / "a").st_nlink
    mt = _mt(d / "a")
    tick()
    os.rmdir(d / "a" / "b")
    assert os.lstat(d / "a").st_nlink == n - 1 and _mt(d / "a") > mt
    _new(d / "a" / "f")
    return [("not empty", err(os.rmdir, d / "a")), ("a file", err(os.rmdir, d / "a" / "f")),
            ("missing", err(os.rmdir, d / "b")), ("dot", err(os.rmdir, d / "a" / "."))]


def check_symlink(d: Path) -> Obs:
    os.symlink("some/where", d / "s")
    assert os.readlink(d / "s") == "some/where" and stat.S_ISLNK(_mode(d / "s"))
    os.chmod(d, 0o777)
    assert as_uid(NOBODY, err, os.symlink, "t", str(d / "theirs")) == 0
    assert os.lstat(d / "theirs").st_uid == NOBODY
    os.chmod(d, 0o755)
    return [("exists", err(os.symlink, "x", d / "s")), ("dangling stat", err(os.stat, d / "s")),
            ("readlink of a file", err(os.readlink, _new(d / "f"))),
            ("not permitted", as_uid(NOBODY, err, os.symlink, "x", str(d / "x")))]


def check_truncate(d: Path) -> Obs:
    f = _new(d / "f", data=b"0123456789")
    mt, ct = _mt(f), _ct(f)
    tick()
    os.truncate(f, 4)
    assert f.read_bytes() == b"0123" and _mt(f) > mt and _ct(f) > ct
    os.truncate(f, 8)
    assert f.read_bytes() == b"0123\0\0\0\0"
    return [("directory", err(os.truncate, d, 0)), ("negative", err(os.truncate, f, -1)),
            ("no permission", as_uid(NOBODY, err, os.truncate, str(f), 0)),
            ("size", os.lstat(f).st_size)]


def check_unlink(d: Path) -> Obs:
    f = _new(d / "f")
    os.link(f, d / "g")
    mt, ct = _mt(d), _ct(f)
    tick()
    os.unlink(f)
    assert os.lstat(d / "g").st_nlink == 1 and _mt(d) > mt and _ct(d / "g") > ct
    os.mkfifo(d / "p")
    os.unlink(d / "p")
    (d / "sub").mkdir()
    fd = os.open(d / "g", os.O_RDWR)  # unlinked while open: still readable and writable
    os.unlink(d / "g")
    os.write(fd, b"still here")
    os.lseek(fd, 0, os.SEEK_SET)
    assert os.read(fd, 100) == b"still here"
    os.close(fd)
    os.chmod(d / "sub", 0o1777)
    _new(d / "sub" / "roots")
    return [("directory", err(os.unlink, d / "sub")), ("missing", err(os.unlink, d / "f")),
            ("sticky dir, not owner", as_uid(NOBODY, err, os.unlink, str(d / "sub" / "roots")))]


def check_utimensat(d: Path) -> Obs:
    f = _new(d / "f")
    ct = _ct(f)
    tick()
    os.utime(f, ns=(1_000_000_123, 2_000_000_456))
    st = os.lstat(f)
    assert (st.st_atime_ns, st.st_mtime_ns) == (1_000_000_123, 2_000_000_456) and st.st_ctime_ns > ct
    os.utime(f)  # now
    assert abs(_mt(f) - time.time_ns()) < 2e9
    (d / "sub").mkdir()
    os.utime(d / "sub", ns=(5_000_000_000, 6_000_000_000))
    assert (os.lstat(d / "sub").st_atime_ns, _mt(d / "sub")) == (5_000_000_000, 6_000_000_000)
    os.symlink("f", d / "ln")
    os.utime(d / "ln", ns=(7_000_000_000, 8_000_000_000), follow_symlinks=False)
    assert _mt(d / "ln") == 8_000_000_000 and _mt(f) != 8_000_000_000
    os.mkfifo(d / "p")
    os.utime(d / "p", ns=(3, 4))
    return [("explicit times, not owner", as_uid(NOBODY, lambda: err(os.utime, f, ns=(1, 1)))),
            ("fifo times", (os.lstat(d / "p").st_atime_ns, _mt(d / "p"))),
            ("missing", err(os.utime, d / "missing"))]


FAMILIES: dict[str, Callable[[Path], Obs]] = {
    name[len("check_"):]: fn for name, fn in sorted(globals().items()) if name.startswith("check_")
}
