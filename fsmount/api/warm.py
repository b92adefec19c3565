"""Warming the cache: fetch every object a version (or some of its paths) needs, in parallel, once.

`plan_warm` walks the selection's trees (iteratively, one level at a time, each level's trees
loaded in parallel) and collects the distinct objects its files' locators name: blocks and packs
alike, each once. `run_warm` fetches those the cache does not hold yet through
`ObjectReader.load` (verified, single-flight, into the shared disk cache), on a bounded pool with
a byte budget for what is in flight. Objects already cached are skipped, so an interrupted warm
goes on where it stopped. A selection larger than the cache cap is refused before anything is
fetched: warming it would only evict its own first half.

`BackgroundWarm` runs the same in a thread of a mount daemon (`fsmount mount --warm`), with
counters for `fsmount status`.
"""

from __future__ import annotations

import errno
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass, field
from typing import Any

from fsmount.cache.fetcher import FROM_STORE, ObjectReader
from fsmount.errors import FsError, FsmountError, NotFoundError
from fsmount.format.objects import EMPTY_TREE_HASH, DirEntry, FileEntry, LinkEntry, Tree
from fsmount.format.tree_edit import lookup, split_path

log = logging.getLogger(__name__)

DEFAULT_WORKERS = 16
IN_FLIGHT_BYTES = 256 * 2**20  # fetched bytes held at once (an object larger than this goes alone)


def _human(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if n < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@dataclass
class WarmPlan:
    """What a selection needs: its distinct objects (hash -> bytes, in the order first met)."""

    paths: list[str]
    files: int = 0
    file_bytes: int = 0
    trees: int = 0
    objects: dict[bytes, int] = field(
        default_factory=dict
    )  # hash -> size (a pack: the end of its last range)
    cached: set[bytes] = field(default_factory=set)  # those the cache held when planned

    @property
    def total_bytes(self) -> int:
        return sum(self.objects.values())

    @property
    def missing(self) -> list[bytes]:
        return [h for h in self.objects if h not in self.cached]

    @property
    def missing_bytes(self) -> int:
        return sum(n for h, n in self.objects.items() if h not in self.cached)


@dataclass
class WarmResult:
    """What a warm did: `--json` prints it as it is."""

    version: str
    paths: list[str]
    files: int  # files in the selection
    objects: int  # distinct objects they need (blocks and packs)
    bytes: int  # their bytes (a pack counted up to the end of the last range the selection uses)
    fetched: int  # objects fetched from the store by this run
    bytes_fetched: int
    already_cached: int  # objects the cache held already (skipped)
    trees: int  # directory trees walked (read through the cache too)
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


@dataclass
class WarmProgress:
    """Counters of a running warm, safe to read from another thread (`fsmount status`)."""

    state: str = "planning"  # planning, fetching, done, stopped, error
    paths: list[str] = field(default_factory=list)
    objects_total: int = 0
    bytes_total: int = 0
    objects_done: int = 0  # fetched or found cached
    bytes_done: int = 0
    objects_fetched: int = 0
    bytes_fetched: int = 0
    already_cached: int = 0
    error: str = ""
    started: float = field(default_factory=time.time)
    seconds: float = 0.0

    def as_dict(self) -> dict[str, Any]:
        d = asdict(self)
        if self.state in ("planning", "fetching"):
            d["seconds"] = time.time() - self.started
        return d


def _selection_roots(
    reader: ObjectReader, root: bytes, paths: Iterable[str]
) -> tuple[list[str], list[bytes], list[FileEntry]]:
    """(normalised paths, trees to walk, files named directly); a path that is not there is NotFoundError."""
    names: list[str] = []
    trees: list[bytes] = []
    files: list[FileEntry] = []
    for p in list(paths) or [""]:
        parts = split_path(p)
        norm = "/".join(parts)
        names.append(norm or "/")
        if not parts:
            trees.append(root)
            continue
        e = lookup(reader.tree, root, norm)
        if e is None:
            raise NotFoundError(f"{p}: no such path in the version")
        if isinstance(e, DirEntry):
            trees.append(e.tree)
        elif isinstance(e, FileEntry):
            files.append(e)
        elif isinstance(e, LinkEntry):  # an external file: its chunks, read from its URL
            files.append(reader.links.register(e))
        # a symlink needs no object
    return names, trees, files


def plan_warm(
    reader: ObjectReader,
    root: bytes,
    paths: Iterable[str] = (),
    workers: int = DEFAULT_WORKERS,
    cap: int | None = None,
    stop: threading.Event | None = None,
) -> WarmPlan:
    """The distinct objects the files under `paths` (files or folders; none: everything) need.

    Trees are walked one level at a time, each level's trees read in parallel (the walk of a
    cold version costs its depth in round trips, not its number of folders). With `cap`, a
    selection whose objects add up to more than `cap` bytes is refused (FsError ENOSPC) with
    one line.
    """
    names, frontier, direct = _selection_roots(reader, root, paths)
    plan = WarmPlan(names)
    seen_files: set[int] = set()
    kept: list[FileEntry] = []  # held, so that no id() in seen_files is reused by a later entry

    def add_file(e: FileEntry) -> None:
        if id(e) in seen_files:  # the same entry named twice (a file and its folder)
            return
        seen_files.add(id(e))
        kept.append(e)
        plan.files += 1
        plan.file_bytes += e.size
        for h, off, length, _ in e.spans():
            end = off + length
            if plan.objects.get(h, -1) < end:
                plan.objects[h] = end

    for f in direct:
        add_file(f)
    seen_trees: set[bytes] = set()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="warm-walk") as pool:
        while frontier:
            if stop is not None and stop.is_set():
                break
            level = [h for h in dict.fromkeys(frontier) if h not in seen_trees]
            seen_trees.update(level)
            trees: list[Tree] = list(pool.map(reader.tree, level))
            frontier = []
            for t in trees:
                for e in t.entries:
                    if isinstance(e, DirEntry):
                        if e.tree != EMPTY_TREE_HASH:
                            frontier.append(e.tree)
                    elif isinstance(e, FileEntry):
                        add_file(e)
                    elif isinstance(e, LinkEntry):
                        add_file(reader.links.register(e))
    plan.trees = len(seen_trees)
    cache = reader.cache
    # A local store read in place needs no warming (nothing of it is cached); external files do.
    plan.cached = {h for h in plan.objects
                   if (reader.in_place and not reader.links.knows(h)) or h in cache}
    if cap is not None and plan.total_bytes > cap:
        raise FsError(
            errno.ENOSPC,
            f"the selection needs {_human(plan.total_bytes)} in {len(plan.objects):,} objects, "
            f"more than the cache cap of {_human(cap)}: warm a part of it, or raise --cache-size",
        )
    return plan


def run_warm(
    reader: ObjectReader,
    plan: WarmPlan,
    *,
    workers: int = DEFAULT_WORKERS,
    advance: Callable[[int], None] | None = None,
    progress: WarmProgress | None = None,
    stop: threading.Event | None = None,
    in_flight_bytes: int = IN_FLIGHT_BYTES,
) -> tuple[int, int]:
    """Fetch the plan's objects the cache lacks; (objects fetched, bytes fetched).

    Each object goes through `ObjectReader.load` (verified, fetched once even if a mount reads it
    at the same time, kept in the disk cache). `advance(n)` is called with each object's bytes as
    it lands; `progress` is updated as objects finish. At most `workers` GETs run at once and at
    most `in_flight_bytes` of fetched bytes are held (one larger object runs alone). `stop` ends
    the run after the objects already started. The first failure stops it and is raised.
    """
    fetched = fetched_bytes = 0
    lock = threading.Lock()
    budget = threading.Condition()
    held = 0

    def one(h: bytes, size: int) -> None:
        nonlocal fetched, fetched_bytes, held
        try:
            if stop is not None and stop.is_set():
                return
            data, where = reader.load(h)
            n = len(data)
            del data
            with lock:
                if where == FROM_STORE:
                    fetched += 1
                    fetched_bytes += n
                if progress is not None:
                    progress.objects_done += 1
                    progress.bytes_done += n
                    if where == FROM_STORE:
                        progress.objects_fetched += 1
                        progress.bytes_fetched += n
                    else:
                        progress.already_cached += 1
            if advance is not None:
                advance(n)
        finally:
            with budget:
                held -= size
                budget.notify_all()

    pending: set[Future[None]] = set()
    with ThreadPoolExecutor(max(1, workers), thread_name_prefix="warm") as pool:
        try:
            for h in plan.missing:
                if len(pending) >= 2 * workers:  # a short queue: a stop or a failure ends the warm soon
                    done, pending = wait(pending, return_when=FIRST_COMPLETED)
                    for f in done:
                        f.result()  # the first failure ends the warm
                if stop is not None and stop.is_set():
                    break
                size = plan.objects[h]
                with budget:
                    while held and held + size > in_flight_bytes:
                        budget.wait()
                    held += size
                pending.add(pool.submit(one, h, size))
            while pending:
                done, pending = wait(pending, return_when=FIRST_COMPLETED)
                for f in done:
                    f.result()
        except BaseException:
            for f in pending:
                f.cancel()
            raise
    reader.cache.flush()  # write-behind (a mount's reader): the objects are in the cache when we return
    return fetched, fetched_bytes


def warm(
    reader: ObjectReader,
    version_id: str,
    root: bytes,
    paths: Iterable[str] = (),
    *,
    workers: int = DEFAULT_WORKERS,
    advance: Callable[[int], None] | None = None,
    on_total: Callable[[int], None] | None = None,
    check_cap: bool = True,
    dry_run: bool = False,
) -> WarmResult:
    """plan_warm then run_warm, timed: the cache then holds everything the selection reads.

    `on_total(n)` is called once planning is done with the bytes left to fetch (a progress bar's
    length), then `advance(n)` as each object lands. `dry_run`: plan only (the trees are read,
    no data object is fetched); the result counts what a warm would fetch as `fetched`.
    """
    t0 = time.perf_counter()
    plan = plan_warm(reader, root, paths, workers, reader.cache.size_limit if check_cap else None)
    if dry_run:
        return result_of(version_id, plan, len(plan.missing), plan.missing_bytes, time.perf_counter() - t0)
    if on_total is not None:
        on_total(plan.missing_bytes)
    # Cache inserts on background threads, as a mount does: the fetch threads go on fetching
    # (run_warm waits for the cache to hold everything before it returns).
    reader.enable_write_behind(IN_FLIGHT_BYTES // 2)
    fetched, nbytes = run_warm(reader, plan, workers=workers, advance=advance)
    return result_of(version_id, plan, fetched, nbytes, time.perf_counter() - t0)


def result_of(version_id: str, plan: WarmPlan, fetched: int, nbytes: int, seconds: float) -> WarmResult:
    return WarmResult(
        version=version_id,
        paths=plan.paths,
        files=plan.files,
        objects=len(plan.objects),
        bytes=plan.total_bytes,
        fetched=fetched,
        bytes_fetched=nbytes,
        already_cached=len(plan.objects) - fetched,
        trees=plan.trees,
        seconds=round(seconds, 3),
    )


class BackgroundWarm:
    """A warm in a thread of its own (a mount daemon's `--warm`): counters in `snapshot()`, `stop()`.

    A failure does not stop the mount: it is logged and shown in the counters (state "error").
    """

    def __init__(
        self, reader: ObjectReader, root: bytes, paths: list[str], workers: int = DEFAULT_WORKERS
    ) -> None:
        self.reader = reader
        self.root = root
        self.paths = paths
        self.workers = workers
        self.progress = WarmProgress(paths=paths)
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="fsmount-warm", daemon=True)

    def start(self) -> BackgroundWarm:
        self._thread.start()
        return self

    def _run(self) -> None:
        p = self.progress
        t0 = time.perf_counter()
        try:
            plan = plan_warm(
                self.reader, self.root, self.paths, self.workers, self.reader.cache.size_limit, self._stop
            )
            p.paths = plan.paths
            p.objects_total, p.bytes_total = len(plan.objects), plan.total_bytes
            p.objects_done = p.already_cached = len(plan.cached)
            p.bytes_done = plan.total_bytes - plan.missing_bytes
            p.state = "fetching"
            log.info(
                "warming %s: %d objects, %s to fetch",
                ", ".join(plan.paths),
                len(plan.missing),
                _human(plan.missing_bytes),
            )
            run_warm(self.reader, plan, workers=self.workers, progress=p, stop=self._stop)
            p.state = "stopped" if self._stop.is_set() else "done"
            log.info(
                "warm %s: %d objects fetched (%s) in %.1f s",
                p.state,
                p.objects_fetched,
                _human(p.bytes_fetched),
                time.perf_counter() - t0,
            )
        except FsmountError as e:
            p.state, p.error = "error", str(e)
            log.error("warm failed: %s", e)
        except Exception as e:  # a bug: the mount goes on serving
            p.state, p.error = "error", f"{type(e).__name__}: {e}"
            log.exception("warm failed")
        finally:
            p.seconds = time.perf_counter() - t0

    def snapshot(self) -> dict[str, Any]:
        return self.progress.as_dict()

    def stop(self, timeout: float = 30.0) -> None:
        """Start nothing more and wait (at most `timeout` s) for the objects already being fetched."""
        self._stop.set()
        if self._thread.is_alive():
            self._thread.join(timeout)
