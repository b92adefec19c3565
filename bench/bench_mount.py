"""Mount benchmarks: every target of issue 3 next to its baseline, in one run, against local moto.

    .venv/bin/python bench/bench_mount.py                       # full size (about 15 min)
    .venv/bin/python bench/bench_mount.py --quick               # small sizes, about 2 min
    .venv/bin/python bench/bench_mount.py --phases seq,ttfb --size-mib 256 --profile /tmp/prof

Phases (``--phases``, default all):

- ``seq``:   cold sequential read of one big file on a fresh mount and cache, next to one plain
             boto3 GET of the same bytes stored as one object; then warm (blocks cached, remounted,
             page cache dropped) next to reading a local copy of the file (page cache dropped).
- ``ttfb``:  open + read(1) of the big file on a fresh mount and cache, next to one GET of a
             block-sized object (medians).
- ``find``:  cold ``find``-like walk + stat of every file of a tree (``--tree-files`` in
             ``--tree-dirs`` folders) through fsmount, rclone mount and s3fs (same files stored as
             plain objects).
- ``small``: cold read of ``--small-files`` files of 16 KiB by ``--threads`` threads: fsmount,
             16-thread boto3 GETs, rclone mount ``--vfs-cache-mode full``, s3fs.
- ``mount``: how long ``fsmount mount`` takes to return (median of 5, s3:// and file:// stores),
             next to a bare ``python -c pass`` and the daemon's import of its modules.
- ``mem``:   daemon VmHWM after walk + stat of a synthetic version of ``--mem-files`` files
             (file:// store, shared content), and per file.

Prints one JSON line per figure, then a table. ``--profile DIR`` records the daemon with py-spy
(``--format raw``, collapsed stacks, idle samples excluded) during each fsmount phase.
"""

from __future__ import annotations

import argparse
import contextlib
import dataclasses
import os
import signal
import statistics
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import (
    FSMOUNT,
    VENV_BIN,
    MiB,
    MotoServer,
    Results,
    drop_page_cache,
    machine_summary,
    proc_cpu_seconds,
    rmtree_force,
    s3_client,
    s3_env,
    temp_dir,
    write_random_file,
)
from fsmount.fs.mountpoint import is_mounted

BUCKET = "bench"
STORE = f"s3://{BUCKET}/fsmount"


# -- helpers ------------------------------------------------------------------------------------


def read_all(path: Path, chunk: int = 1 << 20) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            n += len(data)
    return n


def umount(mnt: Path) -> None:
    for args in (["-u"], ["-u", "-z"]):
        if is_mounted(mnt):
            subprocess.run(["fusermount3", *args, str(mnt)], capture_output=True)
            time.sleep(0.2)


def wait_mounted(mnt: Path, proc: subprocess.Popen[bytes] | None = None, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not is_mounted(mnt):
        if proc is not None and proc.poll() is not None:
            raise RuntimeError(f"mount of {mnt} exited with {proc.returncode}")
        if time.monotonic() > deadline:
            raise RuntimeError(f"{mnt} not mounted after {timeout} s")
        time.sleep(0.05)


def daemon_status(mnt: Path, env: dict[str, str]) -> dict:  # type: ignore[type-arg]
    import json

    out = subprocess.run([str(FSMOUNT), "status", str(mnt), "--json"], capture_output=True, text=True,
                         check=True, env=env).stdout
    return json.loads(out)  # type: ignore[no-any-return]


def daemon_pid(mnt: Path, env: dict[str, str]) -> int:
    return int(daemon_status(mnt, env)["pid"])


def vm_hwm_kib(pid: int) -> int:
    return int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0])


def walk_stat(root: Path) -> int:
    """find ROOT -type f + stat of each file (what `find -type f -exec stat` does, in-process)."""
    count = 0
    for dirpath, _, files in os.walk(root):
        for name in files:
            os.stat(os.path.join(dirpath, name))
            count += 1
    return count


def read_files_threads(paths: list[Path], threads: int) -> int:
    def one(p: Path) -> int:
        with open(p, "rb") as f:
            return len(f.read())

    with ThreadPoolExecutor(threads) as pool:
        return sum(pool.map(one, paths))


class Profiler:
    """py-spy record of one process, stopped with SIGINT (py-spy then writes its output)."""

    def __init__(self, directory: Path | None, name: str, pid: int) -> None:
        self.proc: subprocess.Popen[bytes] | None = None
        if directory is None:
            return
        directory.mkdir(parents=True, exist_ok=True)
        self.proc = subprocess.Popen(
            [str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "250", "--format", "raw",
             "--nonblocking", "--threads", "-o", str(directory / f"{name}.txt")],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        time.sleep(0.5)

    def stop(self) -> None:
        if self.proc is None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.kill(self.proc.pid, signal.SIGINT)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.kill(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


class LiveResults(Results):
    """Results that also print each figure to stderr as it is measured (a long run shows progress)."""

    def add(self, name: str, value: float | int, unit: str, note: str = "") -> None:
        super().add(name, value, unit, note)
        print(f"# {name} = {value:.3f} {unit}  {note}", file=sys.stderr, flush=True)


@dataclasses.dataclass
class Ctx:
    args: argparse.Namespace
    work: Path
    moto: MotoServer
    res: Results
    env: dict[str, str]

    @property
    def s3(self):  # type: ignore[no-untyped-def]
        return s3_client(self.moto.url)

    @contextlib.contextmanager
    def fsmount(self, ref: str, name: str, cache: Path, store: str = STORE,
                profile: str | None = None) -> Iterator[tuple[Path, int]]:
        mnt = self.work / f"mnt-{name}"
        mnt.mkdir(parents=True, exist_ok=True)
        subprocess.run([str(FSMOUNT), "mount", ref, str(mnt), "--store", store, "--cache-dir", str(cache)],
                       check=True, env=self.env)
        prof: Profiler | None = None
        try:
            pid = daemon_pid(mnt, self.env)
            if profile:
                prof = Profiler(self.args.profile, profile, pid)
            yield mnt, pid
        finally:
            if prof is not None:
                prof.stop()
            with contextlib.suppress(Exception):
                self.counters = daemon_status(mnt, self.env)["counters"]
                self.cpu = proc_cpu_seconds(pid)
            umount(mnt)

    def note(self, *keys: str) -> str:
        """Some daemon counters of the last fsmount phase, for the table's note column."""
        c = getattr(self, "counters", {})
        return ", ".join(f"{k}={c.get(k)}" for k in keys) + f", daemon cpu {getattr(self, 'cpu', 0):.2f} s"

    @contextlib.contextmanager
    def rclone(self, prefix: str, name: str) -> Iterator[Path]:
        mnt = self.work / f"mnt-rclone-{name}"
        mnt.mkdir(parents=True, exist_ok=True)
        cache = self.work / f"rclone-cache-{name}"
        env = {k: v for k, v in os.environ.items() if k != "AWS_CA_BUNDLE"}  # plain http to moto
        env = {**env, "RCLONE_CONFIG_BENCH_TYPE": "s3", "RCLONE_CONFIG_BENCH_PROVIDER": "Other",
               "RCLONE_CONFIG_BENCH_ENDPOINT": self.moto.url, "RCLONE_CONFIG_BENCH_ACCESS_KEY_ID": "testing",
               "RCLONE_CONFIG_BENCH_SECRET_ACCESS_KEY": "testing", "RCLONE_CONFIG_BENCH_REGION": "us-east-1",
               "RCLONE_CONFIG_BENCH_FORCE_PATH_STYLE": "true"}
        proc = subprocess.Popen(
            ["rclone", "mount", f"bench:{BUCKET}/{prefix}", str(mnt), "--read-only",
             "--vfs-cache-mode", "full", "--cache-dir", str(cache), "--config", "/dev/null",
             "--log-file", str(self.work / f"rclone-{name}.log")],
            env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_mounted(mnt, proc)
            yield mnt
        finally:
            stop_mount(mnt, proc)
            rmtree_force(cache)

    @contextlib.contextmanager
    def s3fs(self, prefix: str, name: str) -> Iterator[Path]:
        mnt = self.work / f"mnt-s3fs-{name}"
        mnt.mkdir(parents=True, exist_ok=True)
        pw = self.work / "s3fs.passwd"
        pw.write_text("testing:testing\n")
        pw.chmod(0o600)
        proc = subprocess.Popen(
            ["s3fs", f"{BUCKET}:/{prefix}", str(mnt), "-f", "-o", f"url={self.moto.url}",
             "-o", "use_path_request_style", "-o", f"passwd_file={pw}", "-o", "ro",
             "-o", "endpoint=us-east-1"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            wait_mounted(mnt, proc)
            yield mnt
        finally:
            stop_mount(mnt, proc)


def stop_mount(mnt: Path, proc: subprocess.Popen[bytes]) -> None:
    """Unmount a baseline's mount and stop its process (ours, by PID)."""
    umount(mnt)
    with contextlib.suppress(ProcessLookupError):
        os.kill(proc.pid, signal.SIGTERM)
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait()


def make_dataset(ctx: Ctx, name: str, folder: Path, store: str = STORE) -> str:
    import json

    out = subprocess.run([str(FSMOUNT), "sync", "--folder", str(folder), "--project", "bench", "--name", name,
                          "--store", store, "--json", "-q", "--block-size", str(ctx.args.block_size)],
                         capture_output=True, text=True, env=ctx.env, check=True)
    return str(json.loads(out.stdout)["id"])


def upload_plain(ctx: Ctx, folder: Path, prefix: str, threads: int = 16) -> list[str]:
    s3 = ctx.s3
    keys = []
    files = []
    for dirpath, _, names in os.walk(folder):
        for n in names:
            p = Path(dirpath) / n
            files.append(p)
            keys.append(f"{prefix}/{p.relative_to(folder).as_posix()}")
    with ThreadPoolExecutor(threads) as pool:
        list(pool.map(lambda kv: s3.upload_file(str(kv[0]), BUCKET, kv[1]), zip(files, keys, strict=True)))
    return keys


def timed(fn: Callable[[], object]) -> tuple[float, object]:
    t = time.perf_counter()
    out = fn()
    return time.perf_counter() - t, out


# -- phases ----------------------------------------------------------------------------------------


def phase_seq(ctx: Ctx, ref: str, big: Path, do_seq: bool, do_ttfb: bool) -> None:
    res, s3 = ctx.res, ctx.s3
    size = big.stat().st_size
    if do_seq:
        boto_s = min(timed(lambda: len(s3.get_object(Bucket=BUCKET, Key="plain/big.bin")["Body"].read()))[0]
                     for _ in range(2))
        res.add("seq.boto3_get", size / boto_s / 1e6, "MB/s", f"one GET of {size / MiB:.0f} MiB, best of 2")
        cache = ctx.work / "cache-seq"
        with ctx.fsmount(ref, "seq", cache, profile="seq_cold") as (mnt, _):
            cold, _ = timed(lambda: read_all(mnt / "big.bin"))
        res.add("seq.cold.fsmount", size / cold / 1e6, "MB/s", f"{cold:.2f} s, fresh mount and cache; "
                + ctx.note("largest_read", "block_misses", "prefetch_fetched", "memory_hits"))
        res.add("seq.cold.ratio", boto_s / cold, "x", "fsmount/boto3, target >= 0.8")
        with ctx.fsmount(ref, "seq", cache, profile="seq_warm") as (mnt, _):
            drop_page_cache()
            warm, _ = timed(lambda: read_all(mnt / "big.bin"))
        drop_page_cache()
        local, _ = timed(lambda: read_all(big))
        res.add("seq.warm.fsmount", size / warm / 1e6, "MB/s",
                f"{warm:.2f} s, blocks cached, page cache dropped; "
                + ctx.note("largest_read", "memory_hits", "block_hits"))
        res.add("seq.warm.local", size / local / 1e6, "MB/s", "local file, page cache dropped")
        res.add("seq.warm.ratio", local / warm, "x", "fsmount/local, target >= 0.7")
        rmtree_force(cache)
    if do_ttfb:
        block = ctx.args.block_size
        s3.put_object(Bucket=BUCKET, Key="plain/one-block", Body=os.urandom(block))
        gets = [timed(lambda: s3.get_object(Bucket=BUCKET, Key="plain/one-block")["Body"].read())[0]
                for _ in range(5)]
        one_get = statistics.median(gets)
        ttfbs = []
        for i in range(3):
            cache = ctx.work / f"cache-ttfb{i}"
            with ctx.fsmount(ref, "ttfb", cache, profile="ttfb" if i == 0 else None) as (mnt, _):
                def first_byte() -> None:
                    with open(mnt / "big.bin", "rb", buffering=0) as f:
                        f.read(1)
                ttfbs.append(timed(first_byte)[0])
            rmtree_force(cache)
        ttfb = statistics.median(ttfbs)
        res.add("ttfb.one_get", one_get * 1000, "ms", f"median of 5 GETs of a {block / MiB:.0f} MiB object")
        res.add("ttfb.fsmount", ttfb * 1000, "ms", "open + read(1), fresh mount and cache, median of 3")
        res.add("ttfb.ratio", ttfb / one_get, "x", "fsmount/one GET, target <= 3")


def phase_find(ctx: Ctx, ref: str, nfiles: int) -> None:
    res = ctx.res
    with ctx.fsmount(ref, "find", ctx.work / "cache-find", profile="find") as (mnt, _):
        t, n = timed(lambda: walk_stat(mnt))
    assert n == nfiles, (n, nfiles)
    fs_rate = n / t
    res.add("find.fsmount", fs_rate, "entries/s", f"{n} files, {t:.2f} s, cold mount and cache")
    for name, mounter in (("rclone", ctx.rclone), ("s3fs", ctx.s3fs)):
        if name in ctx.args.skip:
            continue
        sub = ctx.args.baseline_dirs
        with mounter("plain/tree", "find") as m:
            roots = [m] if sub <= 0 else sorted(m.iterdir())[:sub]
            t, n = timed(lambda roots=roots: sum(walk_stat(r) for r in roots))
        rate = n / t
        res.add(f"find.{name}", rate, "entries/s", f"{n} files, {t:.2f} s")
        res.add(f"find.ratio_{name}", fs_rate / rate, "x", "target >= 10")


def phase_small(ctx: Ctx, ref: str, rel: list[str]) -> None:
    res, threads = ctx.res, ctx.args.threads
    n = len(rel)
    s3 = s3_client(ctx.moto.url, max_pool=threads)
    t, _ = timed(lambda: list(ThreadPoolExecutor(threads).map(
        lambda k: s3.get_object(Bucket=BUCKET, Key=f"plain/small/{k}")["Body"].read(), rel)))
    boto_rate = n / t
    res.add("small.boto3", boto_rate, "files/s", f"{n} GETs, {threads} threads, {t:.2f} s")
    with ctx.fsmount(ref, "small", ctx.work / "cache-small", profile="small") as (mnt, _):
        t, _ = timed(lambda: read_files_threads([mnt / "small" / r for r in rel], threads))
    fs_rate = n / t
    res.add("small.fsmount", fs_rate, "files/s", f"{threads} threads, {t:.2f} s, cold mount and cache")
    res.add("small.ratio_boto3", fs_rate / boto_rate, "x", "target >= 0.5")
    for name, mounter in (("rclone", ctx.rclone), ("s3fs", ctx.s3fs)):
        if name in ctx.args.skip:
            continue
        with mounter("plain/small", "small") as m:
            t, _ = timed(lambda m=m: read_files_threads([m / r for r in rel], threads))
        rate = n / t
        res.add(f"small.{name}", rate, "files/s", f"{threads} threads, {t:.2f} s")
        res.add(f"small.ratio_{name}", fs_rate / rate, "x", "target > 1")


def make_big_version(ctx: Ctx, nfiles: int, per_dir: int) -> tuple[str, str]:
    """A version of `nfiles` files sharing one 1 KiB block, in a file:// store (trees only)."""
    from fsmount.api.dataset import Dataset
    from fsmount.commit.finalize import ChangeSet, finalize
    from fsmount.commit.registry import read_state
    from fsmount.format.objects import FileEntry

    store = f"file://{ctx.work / 'memstore'}"
    seed = ctx.work / "memseed"
    seed.mkdir()
    (seed / "seed.bin").write_bytes(os.urandom(1024))
    ds = Dataset.create(dataset_name="seed", dataset_project="bench", store=store)
    ds.add_files(seed)
    ds.finalize()
    ws = ds.workspace
    entry = ws.reader.tree(ds.record.root).get("seed.bin")
    assert isinstance(entry, FileEntry)
    big = Dataset.create(dataset_name="million", dataset_project="bench", store=store)
    changes = ChangeSet()
    for i in range(nfiles):
        name = f"f{i:07d}.bin"
        changes.puts[f"d{i // per_dir:05d}/{name}"] = dataclasses.replace(entry, name=name)
    finalize(ws.store, ws.reader, read_state(ws.store, big.id), changes, block_size=entry.block_size)
    return big.id, store


def phase_mount(ctx: Ctx) -> None:
    """`fsmount mount` until it returns, for a tiny version in the s3:// and a file:// store."""
    src = ctx.work / "src-tiny"
    src.mkdir(parents=True, exist_ok=True)
    (src / "a.txt").write_bytes(b"a\n")
    py = str(VENV_BIN / "python")
    def run(*argv: str) -> float:
        return timed(lambda: subprocess.run([py, *argv], check=True, env=ctx.env))[0]

    bare = statistics.median(run("-c", "pass") for _ in range(5))
    imports = statistics.median(run("-P", "-c", "import fsmount.fs.daemon") for _ in range(5))
    ctx.res.add("mount.python_bare", bare, "s", "python -c pass")
    ctx.res.add("mount.daemon_imports", imports, "s", "python -c 'import fsmount.fs.daemon' (incl. start-up)")
    for kind, store in (("s3", STORE), ("file", f"file://{ctx.work / 'tiny-store'}")):
        ref = make_dataset(ctx, f"tiny-{kind}", src, store)
        mnt = ctx.work / f"mnt-tiny-{kind}"
        mnt.mkdir(parents=True, exist_ok=True)
        times = []
        for i in range(5):
            cmd = [str(FSMOUNT), "mount", ref, str(mnt), "--store", store, "--cache-dir",
                   str(ctx.work / f"cache-tiny-{kind}-{i}")]
            times.append(timed(lambda: subprocess.run(cmd, check=True, env=ctx.env))[0])  # noqa: B023
            umount(mnt)
        ctx.res.add(f"mount.{kind}", statistics.median(times), "s",
                    f"fsmount mount returns (fresh cache; min {min(times):.2f}, max {max(times):.2f}); "
                    "target < 1")
    rmtree_force(src)


def phase_mem(ctx: Ctx) -> None:
    res, nfiles = ctx.res, ctx.args.mem_files
    t, (ref, store) = timed(lambda: make_big_version(ctx, nfiles, 1000))
    print(f"# built a {nfiles}-file version in {t:.1f} s", file=sys.stderr)
    with ctx.fsmount(ref, "mem", ctx.work / "cache-mem", store=store, profile="mem") as (mnt, pid):
        base = vm_hwm_kib(pid)
        t, n = timed(lambda: walk_stat(mnt))
        hwm = vm_hwm_kib(pid)
    assert n == nfiles, (n, nfiles)
    res.add("mem.find_stat", n / t, "entries/s",
            f"{n} files in {n // 1000} folders, {t:.1f} s, file:// store")
    res.add("mem.vmhwm", hwm / 1024, "MiB", f"after mount {base / 1024:.0f} MiB; target < 1024")
    res.add("mem.per_file", hwm * 1024 / n, "bytes", f"above mount: {(hwm - base) * 1024 / n:.0f} bytes/file")


# -- main --------------------------------------------------------------------------------------------


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--phases", default="mount,seq,ttfb,find,small,mem")
    ap.add_argument("--quick", action="store_true",
                    help="256 MiB, 5,000-file tree, 2,000 small files, 100k-file version")
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--block-size", type=int, default=4 * MiB)
    ap.add_argument("--tree-files", type=int, default=50_000)
    ap.add_argument("--tree-dirs", type=int, default=500)
    ap.add_argument("--baseline-dirs", type=int, default=0,
                    help="walk only this many folders with rclone/s3fs (0: all)")
    ap.add_argument("--small-files", type=int, default=10_000)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--mem-files", type=int, default=1_000_000)
    ap.add_argument("--skip", default="", help="comma list of baselines to skip: rclone,s3fs")
    ap.add_argument("--profile", type=Path, default=None, help="py-spy profiles of the daemon into DIR")
    args = ap.parse_args()
    if args.quick:
        args.size_mib, args.tree_files, args.tree_dirs = 256, 5_000, 50
        args.small_files, args.mem_files = 2_000, 100_000
    args.skip = {s for s in args.skip.split(",") if s}
    phases = {p for p in args.phases.split(",") if p}
    res = LiveResults(f"Mount benchmarks ({machine_summary()})")
    with temp_dir() as work, MotoServer(work) as moto:
        env = {**os.environ, **s3_env(moto.url), "XDG_DATA_HOME": str(work / "data"),
               "XDG_CACHE_HOME": str(work / "xdgcache"), "FSMOUNT_RUNTIME_DIR": str(work / "run")}
        os.environ.update(env)
        ctx = Ctx(args, work, moto, res, env)
        ctx.s3.create_bucket(Bucket=BUCKET)
        try:
            if "mount" in phases:
                phase_mount(ctx)
            if phases & {"seq", "ttfb"}:
                src = work / "src-big"
                write_random_file(src / "big.bin", args.size_mib * MiB)
                ctx.s3.upload_file(str(src / "big.bin"), BUCKET, "plain/big.bin")
                ref = make_dataset(ctx, "big", src)
                phase_seq(ctx, ref, src / "big.bin", "seq" in phases, "ttfb" in phases)
                rmtree_force(src)
            if "find" in phases:
                src = work / "src-tree"
                per = max(1, args.tree_files // args.tree_dirs)
                for i in range(args.tree_files):
                    d = src / f"d{i // per:04d}"
                    if i % per == 0:
                        d.mkdir(parents=True)
                    (d / f"f{i:06d}.txt").write_bytes(b"%d\n" % i)
                upload_plain(ctx, src, "plain/tree")
                ref = make_dataset(ctx, "tree", src)
                phase_find(ctx, ref, args.tree_files)
                rmtree_force(src)
            if "small" in phases:
                src = work / "src-small"
                rel = []
                for i in range(args.small_files):
                    r = f"d{i // 100:03d}/f{i:05d}.bin"
                    p = src / r
                    p.parent.mkdir(parents=True, exist_ok=True)
                    p.write_bytes(os.urandom(16384))
                    rel.append(r)
                upload_plain(ctx, src, "plain/small")
                wrap = work / "src-small-wrap"
                wrap.mkdir()
                os.rename(src, wrap / "small")
                ref = make_dataset(ctx, "small", wrap)
                phase_small(ctx, ref, rel)
                rmtree_force(wrap)
            if "mem" in phases:
                phase_mem(ctx)
        finally:
            for m in work.glob("mnt-*"):
                umount(m)
            res.add("moto.cpu", moto.cpu_seconds(), "s", "moto server CPU over the whole run")
    res.print_all()


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"thread failed: {a.exc_value}", file=sys.stderr)
    main()
