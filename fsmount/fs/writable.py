"""The writable filesystem of a mount with an overlay, without FUSE: inodes by path over a MergedView.

Inode numbers are handed out on first sight of a path and follow it through renames; an
unlinked or replaced path loses its number; the names of one hard-link group share one
number (fs/path_inodes.py: known paths indexed by parent and name, so an unlink or rename
touches only the paths below it).

Where the work runs (one slow disk or store call must not stall the mount):
- lookups, getattr and listings run their MergedView call on the trio thread when it needs
  no fetch (`inline`; an upper file costs one stat of its data file, in the page cache; a
  listing of a directory with many upper files goes to a worker thread); one that needs a
  fetch, a copy-up or a walk raises NeedsIO before changing anything and runs on a worker thread;
- a change (create, mkdir, unlink, rename, link, setattr: a sqlite transaction) runs inline
  while the overlay's disk is fast, and on a worker thread for a while once one blocked longer
  than SLOW_CHANGE (fs/slowdisk.py: time off the CPU, not preemption); truncates always run
  on a worker thread; removed data files are moved to trash/ and unlinked by the overlay's
  background thread (overlay/datafiles.py);
- while a worker runs a change, `self._meta` (a trio lock) holds every other metadata
  operation back (see `_op`), so the inode table (touched only on the trio thread) always
  changes in the order the view did;
- pread/pwrite of copied-up files try RWF_NOWAIT on the trio thread (served from the page
  cache) and go to a worker thread when that would block;
- commit, discard, rebase after a commit, pending changes and fsync run on worker threads
  (commit and discard under `_meta`).
Reads of a file nobody has written yet go through the same BlockReader (cache, prefetch) as
the read-only mount.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import stat
from collections.abc import AsyncIterator, Callable
from typing import Any, TypeVar

import trio

from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.errors import FsError
from fsmount.format.objects import FileEntry
from fsmount.format.records import VersionRecord, VersionState
from fsmount.fs.blocks import BlockReader, OpenFile
from fsmount.fs.core import XATTR_SHA256, XATTR_VERSION, OpErrors
from fsmount.fs.inodes import ROOT_INO
from fsmount.fs.options import FsOptions
from fsmount.fs.path_inodes import PathInodes
from fsmount.fs.slowdisk import DiskPace
from fsmount.fs.wattr import WAttr, node_attr, unlinked_attr
from fsmount.fs.writable_data import DataIO
from fsmount.overlay.commit import CommitResult, Pending, commit_upper, finish_interrupted, pending
from fsmount.overlay.merged import MergedView
from fsmount.overlay.nodes import NeedsIO, Node
from fsmount.overlay.upper import UpperLayer, default_overlay_dir

log = logging.getLogger(__name__)

T = TypeVar("T")
_ACCMODE = os.O_RDONLY | os.O_WRONLY | os.O_RDWR


def _join(parent: str, name: str) -> str:
    if "/" in name or name in ("", ".", ".."):
        raise FsError(errno.EINVAL)
    return f"{parent}/{name}" if parent else name


class _Open:
    """One FUSE file handle: the view's handle, plus block-reader state for untouched lower files."""

    __slots__ = ("ino", "lower", "vfh")

    def __init__(self, ino: int, vfh: int, lower: OpenFile | None) -> None:
        self.ino = ino
        self.vfh = vfh
        self.lower = lower


class WritableFS:
    """A mounted version plus its overlay: every POSIX operation the adapter forwards."""

    def __init__(self, ws: Workspace, record: VersionRecord, upper: UpperLayer,
                 options: FsOptions | None = None) -> None:
        self.ws = ws
        self.reader = ws.reader
        self.record = record
        self.upper = upper
        self.options = options or FsOptions(entry_timeout=1.0, attr_timeout=1.0)
        self.view = MergedView(upper, ws.reader, record.root, int(record.finalized * 1e9))
        self.uid, self.gid = self.view.default_uid, self.view.default_gid
        self.blocks = BlockReader(ws.reader, self.options)
        self.errors = OpErrors()
        self.inodes = PathInodes(upper)
        self._paths = self.inodes.paths
        self._inos = self.inodes.inos
        self._refs: dict[int, int] = {}
        self._files: dict[int, _Open] = {}
        self._dirs: dict[int, list[tuple[str, Node]]] = {}
        self._next_fh = 1
        self._meta = trio.Lock()
        self.commits = 0
        self.flushes = 0  # FLUSH requests (answered ENOSYS: the kernel sends one per mount)
        self.pace = DiskPace(trio.current_time)  # inline while the overlay's disk is fast (slowdisk.py)
        self.data = DataIO(self.view, self.pace)  # reads and writes of data files (writable_data.py)

    def start(self, nursery: trio.Nursery) -> None:
        self.blocks.start(nursery)

    # -- helpers --------------------------------------------------------------------------

    async def _op(self, fn: Callable[..., T], *args: Any, change: bool = False, offload: bool = False) -> T:
        """Run one operation of the view, in order with every other one.

        It runs right here, between two awaits, so nothing interleaves, when it needs no fetch,
        no copy and no walk (else it raises NeedsIO before changing anything) and, for a change
        (`change`: a sqlite transaction), while the overlay's disk is fast. Otherwise it runs on
        a worker thread while holding `_meta`; so does every operation that arrives while another
        holds it, and an `offload` one (a truncate frees blocks). A change (or write) that blocked
        longer than SLOW_CHANGE inline sends every one to a worker thread for the next
        OFFLOAD_FOR seconds (fs/slowdisk.py). The caller's inode-table update right after the
        await still happens before any other task runs.
        """
        try:
            if not offload and not self._meta.locked() and (not change or self.pace.fast()):
                t0 = self.pace.start()
                try:
                    result = self.view.inline(fn, *args)
                except NeedsIO:
                    pass
                else:
                    if change:
                        self.pace.timed(t0, getattr(fn, '__name__', fn))
                    return result
            async with self._meta:
                return await trio.to_thread.run_sync(functools.partial(fn, *args))
        except OSError as e:  # ENOSPC, EIO... from the overlay's own disk: the caller's errno
            raise FsError(e.errno or errno.EIO, str(e)) from None

    def _path(self, ino: int) -> str:
        p = self._paths.get(ino)
        if p is None:
            raise FsError(errno.ENOENT, f"inode {ino} is gone")
        return p

    def _ino(self, path: str, link: str | None = None) -> int:
        return self.inodes.ino(path, link)

    def _drop(self, path: str) -> None:
        self.inodes.drop(path)

    def _moved(self, old: str, new: str) -> None:
        self.inodes.moved(old, new)

    def _attr(self, n: Node) -> WAttr:
        from_upper = n.row is not None or (n.link is not None and n.link in self.upper.links)
        return node_attr(n, self._ino(n.path, n.link), from_upper, self.record.block_size, self.uid, self.gid)

    # -- names and attributes ------------------------------------------------------------------

    async def lookup(self, parent: int, name: str) -> WAttr:
        base = self._path(parent)
        if name == ".":
            path = base
        elif name == "..":
            path = base.rsplit("/", 1)[0] if "/" in base else ""
        else:
            path = _join(base, name)
        attr = self._attr(await self._op(self.view.lookup, path))
        self._refs[attr.ino] = self._refs.get(attr.ino, 0) + 1
        return attr

    def remember(self, ino: int) -> None:
        self._refs[ino] = self._refs.get(ino, 0) + 1

    def forget(self, ino: int, n: int) -> None:
        left = self._refs.get(ino, 0) - n
        if left > 0:
            self._refs[ino] = left
            return
        self._refs.pop(ino, None)
        if ino != ROOT_INO and not any(f.ino == ino for f in self._files.values()):
            self.inodes.forget(ino)

    async def getattr(self, ino: int) -> WAttr:
        if ino not in self._paths:  # unlinked but still open: fstat of its data file
            for f in self._files.values():
                h = self.view.handle(f.vfh)
                if f.ino == ino and h.fd is not None:
                    return unlinked_attr(ino, os.fstat(h.fd), self.record.block_size, self.uid, self.gid)
        path = self._path(ino)
        return self._attr(await self._op(self.view.lookup, path))

    async def readlink(self, ino: int) -> str:
        return await self._op(self.view.readlink, self._path(ino))

    async def opendir(self, ino: int) -> int:
        path = self._path(ino)
        many = len(self.upper.children.get(path, ())) > 64  # a stat per upper file: off the loop
        entries = await self._op(self.view.readdir, path, change=many)
        fh = self._next_fh
        self._next_fh += 1
        self._dirs[fh] = entries
        return fh

    async def readdir(self, fh: int, offset: int) -> AsyncIterator[tuple[str, WAttr, int]]:
        entries = self._dirs.get(fh)
        if entries is None:
            raise FsError(errno.EBADF)
        for i in range(offset, len(entries)):
            name, node = entries[i]
            yield name, self._attr(node), i + 1

    def releasedir(self, fh: int) -> None:
        self._dirs.pop(fh, None)

    def statvfs(self) -> os.statvfs_result:
        return self.view.statfs()

    async def _unchanged_lower(self, ino: int) -> FileEntry | None:
        """The lower entry of a file whose bytes the overlay has not changed (None otherwise)."""
        if ino not in self._paths:
            return None
        node = await self._op(self.view.lookup, self._paths[ino])
        return node.lower if node.data is None else None

    async def listxattr(self, ino: int) -> list[str]:
        if ino == ROOT_INO:
            return [XATTR_VERSION]
        return [XATTR_SHA256, XATTR_VERSION] if await self._unchanged_lower(ino) else []

    async def getxattr(self, ino: int, name: str) -> bytes:
        if ino == ROOT_INO and name == XATTR_VERSION:
            return self.record.id.encode()
        if name in (XATTR_SHA256, XATTR_VERSION) and ino != ROOT_INO:
            e = await self._unchanged_lower(ino)
            if e is not None:
                return e.sha256.hex().encode() if name == XATTR_SHA256 else e.origin.encode()
        raise FsError(errno.ENODATA)

    # -- changes of names ----------------------------------------------------------------------

    def _new_ref(self, attr: WAttr) -> WAttr:
        self._refs[attr.ino] = self._refs.get(attr.ino, 0) + 1
        return attr

    async def create(self, parent: int, name: str, mode: int, flags: int, uid: int | None = None,
                     gid: int | None = None) -> tuple[int, WAttr]:
        path = _join(self._path(parent), name)
        vfh, node = await self._op(self.view.create_node, path, mode, flags, uid, gid, change=True)
        attr = self._new_ref(self._attr(node))
        return self._new_fh(attr.ino, vfh), attr

    async def mknod(self, parent: int, name: str, mode: int, rdev: int, uid: int | None = None,
                    gid: int | None = None) -> WAttr:
        path = _join(self._path(parent), name)
        node = await self._op(self.view.mknod, path, mode, rdev, uid, gid, change=True)
        return self._new_ref(self._attr(node))

    async def mkdir(self, parent: int, name: str, mode: int, uid: int | None = None,
                    gid: int | None = None) -> WAttr:
        path = _join(self._path(parent), name)
        return self._new_ref(self._attr(await self._op(self.view.mkdir, path, mode, uid, gid, change=True)))

    async def symlink(self, parent: int, name: str, target: str, uid: int | None = None,
                      gid: int | None = None) -> WAttr:
        path = _join(self._path(parent), name)
        node = await self._op(self.view.symlink, path, target, uid, gid, change=True)
        return self._new_ref(self._attr(node))

    async def unlink(self, parent: int, name: str) -> None:
        path = _join(self._path(parent), name)
        await self._op(self.view.unlink, path, change=True)
        self._drop(path)

    async def rmdir(self, parent: int, name: str) -> None:
        path = _join(self._path(parent), name)
        await self._op(self.view.rmdir, path, change=True)
        self._drop(path)

    async def rename(self, parent_old: int, old_name: str, parent_new: int, new_name: str,
                     flags: int) -> None:
        old = _join(self._path(parent_old), old_name)
        new = _join(self._path(parent_new), new_name)
        await self._op(self.view.rename, old, new, flags, change=True)
        if old != new:
            if self._inos.get(old) is not None and self._inos.get(old) == self._inos.get(new):
                return  # two names of one file: nothing happened
            self._drop(new)
            self._moved(old, new)

    async def link(self, ino: int, parent: int, name: str) -> WAttr:
        old = self._path(ino)
        new = _join(self._path(parent), name)
        node = await self._op(self.view.link, old, new, change=True)
        assert node.link is not None
        self.inodes.join_group(ino, node.link)
        return self._new_ref(self._attr(node))

    async def setattr(self, ino: int, fh: int | None, size: int | None, mode: int | None,
                      mtime_ns: int | None, atime_ns: int | None = None, uid: int | None = None,
                      gid: int | None = None) -> WAttr:
        path = self._path(ino)
        f = self._files.get(fh) if fh is not None else None
        view = self.view

        def change() -> Node:  # a copy-up comes first
            if size is not None:
                if f is not None:
                    view.ftruncate(f.vfh, size)
                else:
                    view.truncate(path, size)
            if mode is not None or mtime_ns is not None or atime_ns is not None or uid is not None \
                    or gid is not None:
                return view.setattrs(path, None if mode is None else stat.S_IMODE(mode), mtime_ns, atime_ns,
                                     uid, gid)
            return view.lookup(path)

        return self._attr(await self._op(change, change=True, offload=size is not None))

    # -- file contents ---------------------------------------------------------------------

    def _new_fh(self, ino: int, vfh: int, lower: OpenFile | None = None) -> int:
        fh = self._next_fh
        self._next_fh += 1
        self._files[fh] = _Open(ino, vfh, lower)
        return fh

    async def open(self, ino: int, flags: int) -> int:
        path = self._path(ino)
        trunc = flags & os.O_TRUNC and flags & _ACCMODE != os.O_RDONLY
        vfh = await self._op(self.view.open, path, flags, change=bool(trunc), offload=bool(trunc))
        h = self.view.handle(vfh)
        lower = OpenFile(ino, h.lower) if h.fd is None and h.lower is not None else None
        return self._new_fh(ino, vfh, lower)

    def _open(self, fh: int) -> _Open:
        f = self._files.get(fh)
        if f is None:
            raise FsError(errno.EBADF)
        return f

    async def read(self, fh: int, offset: int, size: int) -> bytes | bytearray:
        f = self._open(fh)
        h = self.view.handle(f.vfh)
        if h.fd is not None:
            return await self.data.pread(h.fd, size, offset)
        if f.lower is None or f.lower.entry is not h.lower:
            assert h.lower is not None
            f.lower = OpenFile(f.ino, h.lower)
        return await self.blocks.read(f.lower, offset, size)

    async def write(self, fh: int, offset: int, data: bytes) -> int:
        self.data.writes += 1
        self.data.bytes_written += len(data)
        f = self._open(fh)
        h = self.view.handle(f.vfh)
        if h.fd is None or self._meta.locked():  # a copy-up, or a commit under way: in order
            return await self._op(self.view.write, f.vfh, offset, data, change=True)
        return await self.data.write(f.vfh, h, offset, data)

    async def fsync(self, fh: int) -> None:
        await trio.to_thread.run_sync(self.view.fsync, self._open(fh).vfh)

    def release(self, fh: int) -> None:
        f = self._files.pop(fh, None)
        if f is None:
            return
        if f.lower is not None:
            f.lower.close()
        self.view.release(f.vfh)

    # -- the overlay as a whole --------------------------------------------------------------------

    def pending_count(self) -> int:
        return sum(1 for p in self.upper.rows if p)

    async def pending(self) -> Pending:
        async with self._meta:
            return await trio.to_thread.run_sync(pending, self.upper, self.ws, self.view.root)

    async def commit(self, message: str = "", version: str | None = None, tags: list[str] | None = None,
                     publish: bool = False) -> CommitResult:
        """Commit the overlay (writes wait meanwhile); the mount then stands on the new version."""
        async with self._meta:
            await self.data.quiesce()

            def run() -> CommitResult:
                with self.view.lock:
                    for h in list(self.view._handles.values()):
                        if h.fd is not None:
                            os.fsync(h.fd)
                    return commit_upper(self.upper, self.ws, message=message, version=version,
                                        tags=tags, publish=publish)

            result = await trio.to_thread.run_sync(run)
            if result.record is not None:
                rec = result.record
                self.record = rec
                await trio.to_thread.run_sync(self.view.rebase, rec.root, int(rec.finalized * 1e9))
                self.commits += 1
            return result

    async def discard(self) -> tuple[int, list[tuple[int, str]], list[int]]:
        """Drop every pending change.

        Returns (upper entries dropped, (parent inode, name) of names that are gone, inodes
        whose contents or attributes may differ now): the kernel's caches of both must go.
        """
        async with self._meta:
            await self.data.quiesce()
            n = self.pending_count()
            await trio.to_thread.run_sync(self.upper.reset, self.record.id, self.record.root)
            rec = self.record
            await trio.to_thread.run_sync(self.view.rebase, rec.root, int(rec.finalized * 1e9))
            gone: list[tuple[int, str]] = []
            for path in sorted(self._inos, key=lambda p: -p.count("/")):
                if path and not await trio.to_thread.run_sync(self.view.exists, path):
                    parent = self._inos.get(path.rsplit("/", 1)[0] if "/" in path else "")
                    if parent is not None:
                        gone.append((parent, path.rsplit("/", 1)[-1]))
                    self._drop(path)
            return n, gone, list(self._paths)

    def counters(self) -> dict[str, object]:
        return {
            "version": self.record.id,
            "writable": True,
            "overlay": str(self.upper.folder),
            "pending": self.pending_count(),
            "commits": self.commits,
            "writes": self.data.writes,
            "bytes_written": self.data.bytes_written,
            "offloaded": self.data.offloaded,
            "slow_changes": self.pace.slow_changes,
            "flushes": self.flushes,
            "open_files": len(self._files),
            "inodes": len(self._paths),
            **self.blocks.stats.as_dict(),
            **self.errors.as_dict(),
            "store": self.reader.stats.as_dict(),
        }





def writable_fs(ws: Workspace, state: VersionState, mountpoint: str, overlay: str | None,
                timeout: float) -> tuple[WritableFS, VersionState]:
    """Open (or create) the overlay of `mountpoint` over version `state`; finish an interrupted commit.

    If a commit of this overlay became final before the overlay was emptied (a crash), the
    mount stands on that child version: it holds exactly what the overlay held.
    """
    folder = overlay or str(default_overlay_dir(ws.store_url, mountpoint))
    upper = UpperLayer(folder)
    try:
        done = finish_interrupted(upper, ws)
        if done is not None and state.id in done.parents:
            log.info("an interrupted commit made %s from %s: mounting it", done.id, state.id)
            state = registry.read_state(ws.store, done.id)
        record = registry.readable_record(ws.reader, state)  # after a repack: the state's root
        ws.reader.tree(record.root)
        upper.bind(state.id, record.root)
    except BaseException:
        upper.close()
        raise
    options = FsOptions(fetch_timeout=timeout, entry_timeout=1.0, attr_timeout=1.0)
    return WritableFS(ws, record, upper, options), state
