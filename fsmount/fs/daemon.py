"""The mount daemon: validate, pyfuse3.init, serve until unmounted or signalled, always clean up."""

from __future__ import annotations

import contextlib
import gc
import logging
import os
import signal
import threading
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, Any

import pyfuse3
import trio

from fsmount import config
from fsmount.api.workspace import Workspace
from fsmount.cache.local_cache import ContentCache
from fsmount.commit import registry
from fsmount.errors import FsmountError, NotFoundError, StateError, UsageError
from fsmount.fs import control, fuse_loop
from fsmount.fs.adapter import Operations
from fsmount.fs.core import ReadOnlyFS
from fsmount.fs.mountpoint import check_fuse, check_mountpoint, is_mounted, unmount
from fsmount.fs.options import FsOptions, tune_kernel
from fsmount.logs import setup_logging
from fsmount.service import metrics
from fsmount.service.config import EX_CONFIG
from fsmount.service.credentials import export_credentials
from fsmount.service.notify import notify
from fsmount.service.request import MountRequest
from fsmount.store import open_store

if TYPE_CHECKING:  # a read-only mount never imports the writable side (0.1 s of `fsmount mount`)
    from fsmount.api.warm import BackgroundWarm
    from fsmount.fs.writable import WritableFS

log = logging.getLogger(__name__)

# pyfuse3 request tasks: kept alive between bursts (its default of 1 idle task ends and restarts tasks
# under concurrent readers, each start allocating a fresh request buffer; 32 live ones cost nothing).
FUSE_MIN_TASKS = 32
FUSE_MAX_TASKS = 128
TREES_WAIT = 2.0  # seconds "ready" waits for the version's tree packs (then they go on loading)

class Mounter:
    """One mount's life: prepare (every check that can fail), mount, serve, clean up."""

    def __init__(self, req: MountRequest) -> None:
        self.req = req
        self.mountpoint = os.path.abspath(req.mountpoint)
        self.ws: Workspace | None = None
        self.fs: ReadOnlyFS | WritableFS | None = None
        self.started = time.time()
        self.sock = control.socket_name(self.mountpoint)
        self.warming: BackgroundWarm | None = None  # `--warm`: started once the mount is live
        self.trees_loading: threading.Event | None = None  # the version's tree packs, loading
        self.loop_stats: fuse_loop.LoopStats | None = None  # pyfuse3's request loop, quick path

    @property
    def writable(self) -> WritableFS | None:
        """The writable file system of a `--write` mount once prepared, else None."""
        return self.fs if self.req.write and self.fs is not None else None  # type: ignore[return-value]

    def prepare(self) -> None:
        """Resolve the version and read its root; raises FsmountError with one clear line."""
        req = self.req
        check_fuse()
        check_mountpoint(self.mountpoint)
        self.loop_stats = fuse_loop.install(config.fuse_burst())  # before pyfuse3.main, in this process
        if req.credentials_file:
            export_credentials(req.credentials_file)  # for boto3: this process is the mount's own
        t = req.read_timeout
        # The cache's SQLite shards open (file creation, fsyncs: off the GIL) on a thread while the
        # store's client loads (boto3's imports and models: CPU); an unwritable cache folder still
        # fails here, before anything is mounted, after a bad store URL would have.
        with ThreadPoolExecutor(1, thread_name_prefix="cache-open") as pool:
            opening = pool.submit(ContentCache, req.cache_dir, req.cache_size)
            try:
                store = open_store(req.store, endpoint_url=req.endpoint_url, connect_timeout=min(5.0, t),
                                   read_timeout=t, max_attempts=2)
            except BaseException:
                with contextlib.suppress(Exception):
                    opening.result().close()
                raise
            cache = opening.result()
        self.ws = Workspace(store, cache_dir=req.cache_dir, cache_size=req.cache_size, cache=cache)
        state = registry.resolve(store, req.ref)
        if req.write:
            from fsmount.fs.writable import writable_fs

            self.fs, state = writable_fs(self.ws, state, self.mountpoint, req.overlay, t)
            self.state = state
            return
        record = registry.readable_record(self.ws.reader, state)  # after a repack: the state's root
        self.ws.reader.tree(record.root)  # the root alone; then all other trees in one GET, if packed
        if not self.ws.reader.in_place:
            self.trees_loading = self.ws.reader.tree_packs.preload()  # ready waits for it (bounded)
        self.fs = ReadOnlyFS(self.ws.reader, record, FsOptions(fetch_timeout=t))
        self.state = state

    def snapshot(self) -> dict[str, Any]:
        assert self.fs is not None
        return {"mountpoint": self.mountpoint, "pid": os.getpid(), "ref": self.req.ref,
                "store": self.ws.store_url if self.ws else None, "uptime": time.time() - self.started,
                "counters": {**self.fs.counters(), **self._loop_counters()},
                **({"warm": self.warming.snapshot()} if self.warming else {})}

    def _loop_counters(self) -> dict[str, int]:
        st = self.loop_stats
        return {} if st is None else {"fuse_direct": st.direct, "fuse_scheduled": st.scheduled}

    def start_warm(self) -> None:
        """`--warm PATH...`: fetch what those paths need in the background (fsmount/api/warm.py)."""
        if self.req.warm_paths and self.ws is not None and self.fs is not None:
            from fsmount.api.warm import BackgroundWarm

            self.warming = BackgroundWarm(self.ws.reader, self.fs.record.root, self.req.warm_paths).start()

    def mount(self) -> None:
        assert self.fs is not None
        ops: Operations
        if self.writable is not None:
            from fsmount.fs.adapter_rw import WritableOperations

            ops = WritableOperations(self.writable)
        else:
            assert isinstance(self.fs, ReadOnlyFS)
            ops = Operations(self.fs)
        try:
            pyfuse3.init(ops, self.mountpoint, self.req.fuse_option_set())
        except RuntimeError as e:
            raise FsmountError(f"cannot mount {self.mountpoint}: {e}") from None
        control.write_info(self.mountpoint, {
            "mountpoint": self.mountpoint, "version": self.fs.record.id, "ref": self.req.ref,
            "name": f"{self.state.project}/{self.state.name}@{self.state.version}",
            "store": self.ws.store_url if self.ws else None, "pid": os.getpid(), "socket": self.sock,
            "started": self.started, "log": str(control.log_path(self.mountpoint)),
            **({"writable": True, "overlay": str(self.writable.upper.folder)} if self.writable is not None
               else {}),
        })

    def _requests(self) -> dict[str, control.Handler]:
        """Control-socket operations of a writable mount (commit, diff, discard)."""
        if self.writable is None:
            return {}
        from fsmount.fs.overlay_ops import overlay_handlers

        return overlay_handlers(self.writable, self.mountpoint, lambda: self.mount_info_update())

    def mount_info_update(self) -> None:
        """After a commit: the registration names the version the mount now stands on."""
        assert self.fs is not None
        info = control.read_info(self.mountpoint)
        if info is not None and info.get("pid") == os.getpid():
            rec = self.fs.record
            info.update(version=rec.id, name=f"{rec.project}/{rec.name}@{rec.version}")
            control.write_info(self.mountpoint, info)

    async def serve(self, ready: Callable[[], None] | None = None) -> None:
        """Serve until unmounted; `ready` runs once everything listens, so a port that cannot be
        had fails the start (with its one line) instead of killing a mount reported live."""
        assert self.fs is not None
        http = None if self.req.metrics_port is None else await metrics.listen_http(self.req.metrics_port)
        async with trio.open_nursery() as nursery:
            self.fs.start(nursery)
            await nursery.start(control.serve, self.sock, self.snapshot, self._requests())
            if http is not None:
                nursery.start_soon(metrics.serve_http, http, self.snapshot)
            nursery.start_soon(self._tune_kernel, ready)
            if self.req.metrics_file:
                nursery.start_soon(metrics.write_periodically, self.req.metrics_file, self.snapshot)
            nursery.start_soon(self._signals)
            gc.freeze()  # startup's objects live as long as the mount: full collections skip them (7 %)
            await pyfuse3.main(min_tasks=FUSE_MIN_TASKS, max_tasks=FUSE_MAX_TASKS)
            nursery.cancel_scope.cancel()

    async def _tune_kernel(self, ready: Callable[[], None] | None) -> None:
        """Once the FUSE INIT is done (a stat through the mount waits for it): larger kernel
        reads and more of them in flight, where allowed (root); then report the mount ready."""
        try:
            opts = getattr(self.fs, "options", None) or FsOptions()
            done = await trio.to_thread.run_sync(tune_kernel, self.mountpoint, opts, abandon_on_cancel=True)
            if done:
                log.info("kernel settings: %s", ", ".join(done))
            if self.trees_loading is not None:  # a lookup after "ready" then finds every tree at hand
                await trio.to_thread.run_sync(self.trees_loading.wait, TREES_WAIT, abandon_on_cancel=True)
        finally:
            if ready is not None:
                ready()

    async def _signals(self) -> None:
        with trio.open_signal_receiver(signal.SIGTERM, signal.SIGINT, signal.SIGHUP) as signals:
            async for sig in signals:
                log.info("signal %s: unmounting %s", signal.Signals(sig).name, self.mountpoint)
                notify("STOPPING=1", f"STATUS=unmounting {self.mountpoint}")
                pyfuse3.terminate()
                return

    def close(self, mounted: bool) -> None:
        if mounted:
            try:
                pyfuse3.close(unmount=True)
            except Exception:
                log.exception("closing the FUSE session failed")
            if is_mounted(self.mountpoint):
                with contextlib.suppress(FsmountError):
                    unmount(self.mountpoint)
        control.remove_info(self.mountpoint, os.getpid())
        if self.warming is not None:
            self.warming.stop()
        if self.writable is not None:
            self.writable.upper.close()
        if self.ws is not None:
            self.ws.close()


class _ReadyPipe:
    """The launcher's pipe: one line, once: 'OK', or 'ERR <exit code> <why>'."""

    def __init__(self, fd: int | None) -> None:
        self.fd = fd

    @property
    def waiting(self) -> bool:
        return self.fd is not None

    def report(self, line: str) -> None:
        fd, self.fd = self.fd, None
        if fd is None:
            return
        with contextlib.suppress(OSError):
            os.write(fd, (line.replace("\n", " ") + "\n").encode())
            os.close(fd)


def run(req: MountRequest, ready_fd: int | None = None) -> int:
    """Mount and serve in this process until unmounted or signalled; returns an exit status.

    With `ready_fd`, one line goes to that pipe: 'OK' once the mount is live and everything
    listens, or 'ERR <exit code> <why>' if the start failed.
    """
    m = Mounter(req)
    pipe = _ReadyPipe(ready_fd)
    mounted = False
    try:
        m.prepare()
        m.mount()
        mounted = True
        log.info("mounted %s at %s", m.fs.record.id if m.fs else "?", m.mountpoint)
        status = f"STATUS=serving {m.fs.record.id if m.fs else '?'} at {m.mountpoint}"

        def ready() -> None:  # once the FUSE handshake is done and the kernel side tuned
            notify("READY=1", status)
            pipe.report("OK")
            m.start_warm()

        trio.run(m.serve, ready)
        return 0
    except FsmountError as e:
        if req.service and isinstance(e, NotFoundError | StateError | UsageError):
            e.exit_code = EX_CONFIG  # systemd: a configuration error, not worth a restart
        if not pipe.waiting:
            raise
        pipe.report(f"ERR {e.exit_code} {e}")
        return e.exit_code
    except BaseException as e:
        log.exception("mount daemon failed")
        pipe.report(f"ERR 70 mount daemon failed: {type(e).__name__}: {e}")
        raise
    finally:
        if mounted:
            notify("STOPPING=1")
        m.close(mounted)
        if mounted:
            log.info("unmounted %s", m.mountpoint)


def run_foreground(req: MountRequest, ready_fd: int | None = None) -> int:
    """`fsmount mount --foreground`: the daemon's logging (to its log file, else stderr, without
    timestamps when journald adds its own), then run()."""
    setup_logging(req.log_level or "info", req.log_file,
                  timestamps=bool(req.log_file) or not config.under_journald())
    return run(req, ready_fd)
