"""Training epochs over many small files: fsmount cold, warm and `fsmount warm` next to their baselines.

    .venv/bin/python bench/bench_epoch.py                 # 20,000 files of 8-96 KiB in 100 folders
    .venv/bin/python bench/bench_epoch.py --quick         # 2,000 files in 20 folders
    .venv/bin/python bench/bench_epoch.py --files 400 --dirs 4 --skip rclone,s3fs,torch   # a smoke run

One moto S3 server on 127.0.0.1 holds the same files three ways: as an fsmount version
(`fsmount sync`), as plain objects (one per file) and as 16 tar shards. Every epoch reads each
file once, whole, in one shuffled order, by `--threads` threads:

- ``shards``:   16 threads GET the 16 tar shards and walk their members (plain boto3): the ceiling.
- ``boto3``:    one GET per file (plain boto3).
- ``cold``:     fsmount on a fresh mount and an empty cache; GETs of objects counted at the server.
- ``warm``:     `fsmount warm` into an empty cache (its throughput, and GETs at the server), then an
                epoch on a fresh mount of that cache with the page cache dropped (GETs counted: 0 is
                the target), next to the local folder with the page cache dropped.
- ``ttfb``:     open + read(1) of one small file on a fresh mount and cache (median of 3) vs one GET
                of a small object (median of 5).
- ``rclone``, ``s3fs``: the same epoch through `rclone mount --vfs-cache-mode full` and s3fs over the
                plain objects (skipped, with the reason printed, when the tool is not installed:
                `make bench-deps` installs both).
- ``torch``:    one epoch of torchvision.datasets.ImageFolder + DataLoader(num_workers=4,
                shuffle=True) over the local folder, a cold fsmount mount and a warm one. torch and
                torchvision come from the benchmark's own venv (.bench-venv, `make bench-deps`),
                never from fsmount's dependencies; the images are real JPEGs made with its Pillow.
                Without that venv the files are random bytes and this phase is skipped.

Moto answers a ranged GET by reading the whole object, so anything fetched by ranges from a large
object costs far more here than on real S3. Prints one JSON line per figure, then a table.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import random
import statistics
import subprocess
import sys
import tarfile
import threading
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_mount import Ctx, LiveResults, daemon_status, umount, upload_plain
from bench.common import (
    FSMOUNT,
    MotoServer,
    drop_page_cache,
    machine_summary,
    proc_cpu_seconds,
    rmtree_force,
    s3_client,
    s3_env,
    temp_dir,
)

BUCKET = "bench"
STORE = f"s3://{BUCKET}/fsmount"
OBJECTS = f"/{BUCKET}/fsmount/objects/"
BENCH_PY = Path(__file__).resolve().parents[1] / ".bench-venv" / "bin" / "python"
SHARDS = 16

# Run by the bench venv's python (Pillow): DIR COUNT DIRS MIN_KIB MAX_KIB SEED. Noise images, so
# each JPEG is distinct and incompressible; their pixel count is chosen to land on a size drawn
# uniformly from MIN..MAX KiB.
MAKE_JPEGS = r"""
import io, os, random, sys
from PIL import Image
root, count, dirs, lo, hi, seed = sys.argv[1], *map(int, sys.argv[2:7])
rng = random.Random(seed)
def jpeg(pixels):
    side = max(8, int(pixels ** 0.5))
    img = Image.frombytes("RGB", (side, side), os.urandom(side * side * 3))
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=85)
    return buf.getvalue()
probe = jpeg(128 * 128)
per_pixel = len(probe) / (128 * 128)
for i in range(count):
    d = os.path.join(root, f"c{i % dirs:03d}")
    os.makedirs(d, exist_ok=True)
    want = rng.randint(lo * 1024, hi * 1024)
    data = jpeg(want / per_pixel)
    with open(os.path.join(d, f"img{i:06d}.jpg"), "wb") as f:
        f.write(data)
"""

# Run by the bench venv's python: ROOT WORKERS. One epoch of ImageFolder + DataLoader; prints JSON.
TORCH_EPOCH = r"""
import json, sys, time
import torch
from torch.utils.data import DataLoader
from torchvision import datasets, transforms
root, workers = sys.argv[1], int(sys.argv[2])
torch.manual_seed(0)
t0 = time.perf_counter()
ds = datasets.ImageFolder(root, transform=transforms.Compose([transforms.Resize((64, 64)),
                                                              transforms.ToTensor()]))
t1 = time.perf_counter()
n = 0
for images, labels in DataLoader(ds, batch_size=64, shuffle=True, num_workers=workers):
    n += len(labels)
t2 = time.perf_counter()
print(json.dumps({"images": n, "classes": len(ds.classes), "scan": t1 - t0, "epoch": t2 - t1}))
"""


# -- data ------------------------------------------------------------------------------------------


def make_files(root: Path, count: int, dirs: int, lo: int, hi: int, seed: int) -> str:
    """The dataset folder: real JPEGs with the bench venv's Pillow, else random bytes. Returns which."""
    if (
        BENCH_PY.exists()
        and subprocess.run([str(BENCH_PY), "-c", "import PIL"], capture_output=True).returncode == 0
    ):
        subprocess.run(
            [str(BENCH_PY), "-c", MAKE_JPEGS, str(root), str(count), str(dirs), str(lo), str(hi), str(seed)],
            check=True,
        )
        return "jpeg"
    rng = random.Random(seed)
    for i in range(count):
        d = root / f"c{i % dirs:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"img{i:06d}.bin").write_bytes(os.urandom(rng.randint(lo * 1024, hi * 1024)))
    return "random"


def make_shards(ctx: Ctx, root: Path, rel: list[str]) -> list[str]:
    """The files as SHARDS tar objects (round robin over the shuffled order), uploaded; their keys."""
    s3 = ctx.s3
    keys = []

    def one(i: int) -> str:
        buf = io.BytesIO()
        with tarfile.open(fileobj=buf, mode="w") as tar:
            for r in rel[i::SHARDS]:
                tar.add(str(root / r), arcname=r)
        key = f"shards/{i:02d}.tar"
        s3.put_object(Bucket=BUCKET, Key=key, Body=buf.getvalue())
        return key

    with ThreadPoolExecutor(4) as pool:
        keys = list(pool.map(one, range(SHARDS)))
    return keys


def make_dataset(ctx: Ctx, folder: Path) -> str:
    out = subprocess.run(
        [
            str(FSMOUNT),
            "sync",
            "--folder",
            str(folder),
            "--project",
            "bench",
            "--name",
            "epoch",
            "--store",
            STORE,
            "--json",
            "-q",
        ],
        capture_output=True,
        text=True,
        env=ctx.env,
        check=True,
    )
    return str(json.loads(out.stdout)["id"])


# -- epochs ----------------------------------------------------------------------------------------


def read_epoch(root: Path, rel: list[str], threads: int) -> tuple[float, int]:
    """Read every file of `rel` under `root` once, whole, `threads` at a time: (seconds, bytes)."""

    def one(r: str) -> int:
        with open(root / r, "rb") as f:
            return len(f.read())

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(one, rel))
    return time.perf_counter() - t0, n


def shard_epoch(ctx: Ctx, keys: list[str], threads: int) -> tuple[float, int, int]:
    s3 = s3_client(ctx.moto.url, max_pool=threads)

    def one(key: str) -> tuple[int, int]:
        body = s3.get_object(Bucket=BUCKET, Key=key)["Body"]
        files = nbytes = 0
        with tarfile.open(fileobj=body, mode="r|") as tar:
            for m in tar:
                f = tar.extractfile(m)
                if f is not None:
                    nbytes += len(f.read())
                    files += 1
        return files, nbytes

    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        got = list(pool.map(one, keys))
    return time.perf_counter() - t0, sum(g[0] for g in got), sum(g[1] for g in got)


def boto_epoch(ctx: Ctx, rel: list[str], threads: int) -> tuple[float, int]:
    s3 = s3_client(ctx.moto.url, max_pool=threads)
    t0 = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        n = sum(pool.map(lambda r: len(s3.get_object(Bucket=BUCKET, Key=f"plain/{r}")["Body"].read()), rel))
    return time.perf_counter() - t0, n


@contextlib.contextmanager
def mounted(ctx: Ctx, ref: str, name: str, cache: Path) -> Iterator[tuple[Path, float]]:
    """A fresh fsmount mount (background daemon) on `cache`: (mountpoint, seconds `mount` took)."""
    mnt = ctx.work / f"mnt-{name}"
    mnt.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    subprocess.run(
        [str(FSMOUNT), "mount", ref, str(mnt), "--store", STORE, "--cache-dir", str(cache)],
        check=True,
        env=ctx.env,
    )
    took = time.perf_counter() - t0
    pid = 0
    try:
        pid = int(daemon_status(mnt, ctx.env)["pid"])
        s0 = schedstat(pid)
        yield mnt, took
    finally:
        with contextlib.suppress(Exception):
            ctx.counters = daemon_status(mnt, ctx.env)["counters"]
            ctx.cpu = proc_cpu_seconds(pid)
            s1 = schedstat(pid)
            ctx.sched = (s1[0] - s0[0], s1[1] - s0[1])  # type: ignore[attr-defined]
        umount(mnt)


def schedstat(pid: int) -> tuple[float, float]:
    """(seconds run, seconds waited runnable for a CPU) of a process's main thread (/proc schedstat):
    a FUSE daemon on a loaded machine mostly waits for a CPU, not for its own work."""
    run, wait = Path(f"/proc/{pid}/schedstat").read_text().split()[:2]
    return int(run) / 1e9, int(wait) / 1e9


def sched_note(ctx: Ctx) -> str:
    run, wait = getattr(ctx, "sched", (0.0, 0.0))
    return f"; daemon main thread ran {run:.1f} s, waited {wait:.1f} s for a CPU"


def pack_keys(ctx: Ctx) -> set[str]:
    """Store keys of the version's large objects (packs; trees are a few KiB), for counting GETs."""
    keys = set()
    for page in ctx.s3.get_paginator("list_objects_v2").paginate(Bucket=BUCKET, Prefix="fsmount/objects/"):
        keys |= {o["Key"] for o in page.get("Contents", []) if o["Size"] >= 2**20}
    return keys


def gets_of(moto: MotoServer, since: int, keys: set[str]) -> tuple[int, int]:
    """(object GETs of `keys`, other object GETs) in moto's log after `since`."""
    with open(moto.log_path, "rb") as f:
        f.seek(since)
        lines = f.read().decode("utf-8", "replace").splitlines()
    packs = other = 0
    for line in lines:
        parts = line.split('"', 2)[1].split() if '"' in line else []
        if len(parts) < 2 or parts[0] != "GET" or OBJECTS not in parts[1]:
            continue
        key = parts[1].split("?", 1)[0].removeprefix(f"/{BUCKET}/")
        if key in keys:
            packs += 1
        else:
            other += 1
    return packs, other


def object_count(ref: str, env: dict[str, str]) -> tuple[int, int]:
    """(distinct objects, their bytes) the whole version needs: the packs, once files are packed."""
    with temp_dir("fsmount-bench-plan-") as tmp:
        out = subprocess.run(
            [
                str(FSMOUNT),
                "warm",
                ref,
                "--dry-run",
                "--store",
                STORE,
                "--cache-dir",
                str(tmp),
                "--json",
                "-q",
            ],
            capture_output=True,
            text=True,
            env=env,
            check=True,
        )
    r = json.loads(out.stdout)
    return int(r["objects"]), int(r["bytes"])


def torch_epoch(root: Path, workers: int) -> dict[str, float]:
    out = subprocess.run(
        [str(BENCH_PY), "-c", TORCH_EPOCH, str(root), str(workers)],
        capture_output=True,
        text=True,
        check=True,
    )
    return dict(json.loads(out.stdout.strip().splitlines()[-1]))


def torch_available() -> str:
    """'' if the bench venv has torch and torchvision, else why not."""
    if not BENCH_PY.exists():
        return f"no {BENCH_PY.parent.parent.name} venv (make bench-deps installs torch there)"
    probe = subprocess.run(
        [str(BENCH_PY), "-c", "import torch, torchvision; print(torch.__version__, torchvision.__version__)"],
        capture_output=True,
        text=True,
    )
    if probe.returncode != 0:
        return f"torch/torchvision do not import in {BENCH_PY}: {probe.stderr.strip().splitlines()[-1:]}"
    return ""


# -- main --------------------------------------------------------------------------------------------


def run(args: argparse.Namespace) -> None:
    res = LiveResults(f"Epochs over small files ({machine_summary()})")
    skip = set(args.skip)
    n = args.files
    with temp_dir() as work, MotoServer(work) as moto:
        env = {
            **os.environ,
            **s3_env(moto.url),
            "XDG_DATA_HOME": str(work / "data"),
            "XDG_CACHE_HOME": str(work / "xdgcache"),
            "FSMOUNT_RUNTIME_DIR": str(work / "run"),
        }
        os.environ.update(env)
        ctx = Ctx(args, work, moto, res, env)
        ctx.s3.create_bucket(Bucket=BUCKET)
        src = work / "src"
        t0 = time.perf_counter()
        kind = make_files(src, n, args.dirs, args.min_kib, args.max_kib, args.seed)
        rel = sorted(str(p.relative_to(src)) for p in src.rglob("*") if p.is_file())
        nbytes = sum((src / r).stat().st_size for r in rel)
        random.Random(args.seed).shuffle(rel)
        print(
            f"# {n} {kind} files, {nbytes / 1e6:.0f} MB in {args.dirs} folders "
            f"({time.perf_counter() - t0:.0f} s)",
            file=sys.stderr,
        )
        what = f"{n:,} files, {nbytes / 1e9:.2f} GB, {args.threads} threads, shuffled"
        try:
            ref = make_dataset(ctx, src)
            upload_plain(ctx, src, "plain")
            keys = make_shards(ctx, src, rel)
            threads = args.threads

            t, files, got = shard_epoch(ctx, keys, threads)
            assert files == n and got == nbytes, (files, got)
            ceiling = n / t
            res.add(
                "epoch.shards",
                ceiling,
                "files/s",
                f"{SHARDS} tar shards, plain boto3; {got / t / 1e6:.0f} MB/s",
            )

            t, got = boto_epoch(ctx, rel, threads)
            assert got == nbytes
            res.add("epoch.boto3", n / t, "files/s", f"one GET per file, {what}")

            objects, obj_bytes = object_count(ref, env)
            res.add(
                "epoch.objects",
                objects,
                "objects",
                f"distinct objects of the version ({obj_bytes / 1e6:.0f} MB): "
                "the packs, once files are packed",
            )

            cache = work / "cache-cold"
            since = moto.log_offset()
            with mounted(ctx, ref, "cold", cache) as (mnt, took):
                t, got = read_epoch(mnt, rel, threads)
            gets = moto.count_requests(since, "GET", OBJECTS)
            packs = pack_keys(ctx)
            pack_gets, tree_gets = gets_of(moto, since, packs)
            assert got == nbytes
            cold = n / t
            res.add("mount.seconds", took, "s", "`fsmount mount` returning (target < 1)")
            res.add(
                "epoch.cold.fsmount",
                cold,
                "files/s",
                f"fresh mount, empty cache; {what}; "
                + ctx.note("pack_fetches", "ranged_reads", "pack_wait_timeouts") + sched_note(ctx),
            )
            res.add("epoch.cold.ratio_shards", cold / ceiling, "x", "fsmount cold / shards, target >= 0.5")
            res.add(
                "epoch.cold.gets",
                gets,
                "GETs",
                f"object GETs at the server during the epoch, {objects} objects",
            )
            res.add("epoch.cold.gets_per_object", gets / max(1, objects), "x", "target <= 1.2 (GETs / packs)")
            res.add(
                "epoch.cold.pack_gets_per_pack",
                pack_gets / max(1, len(packs)),
                "x",
                f"GETs of the {len(packs)} packs (whole or ranged) / packs; the other {tree_gets} GETs "
                "are directory trees (one per folder)",
            )
            rmtree_force(cache)

            cache = work / "cache-warm"
            since = moto.log_offset()
            w = subprocess.run(
                [str(FSMOUNT), "warm", ref, "--store", STORE, "--cache-dir", str(cache), "--json", "-q"],
                capture_output=True,
                text=True,
                env=env,
                check=True,
            )
            wr = json.loads(w.stdout)
            wgets = moto.count_requests(since, "GET", OBJECTS)
            res.add(
                "warm.command",
                n / wr["seconds"],
                "files/s",
                f"`fsmount warm` into an empty cache: {wr['seconds']:.1f} s, "
                f"{wr['bytes_fetched'] / wr['seconds'] / 1e6:.0f} MB/s, {wr['fetched']} objects, "
                f"{wgets} GETs",
            )
            res.add("warm.ratio_shards", (n / wr["seconds"]) / ceiling, "x", "fsmount warm / shards")
            with mounted(ctx, ref, "warm", cache) as (mnt, _):
                drop_page_cache()
                since = moto.log_offset()
                t, got = read_epoch(mnt, rel, threads)
                after = moto.count_requests(since, "GET", OBJECTS)
            assert got == nbytes
            warm = n / t
            drop_page_cache()
            t, got = read_epoch(src, rel, threads)
            local = n / t
            res.add(
                "epoch.warm.fsmount",
                warm,
                "files/s",
                "remount on the cache `fsmount warm` filled, page cache "
                f"dropped; {after} object GETs; " + ctx.note("packed_fast", "page_ins") + sched_note(ctx),
            )
            res.add("epoch.warm.local", local, "files/s", "the local folder, page cache dropped")
            res.add("epoch.warm.gets", after, "GETs", "object GETs during the warm epoch, target 0")
            res.add("epoch.warm.ratio_local", warm / local, "x", "fsmount warm / local, target >= 0.7")

            ttfbs, one_gets = [], []
            small = min(rel, key=lambda r: (src / r).stat().st_size)
            for i in range(3):
                c = work / f"cache-ttfb{i}"
                with mounted(ctx, ref, "ttfb", c) as (mnt, _):
                    t0 = time.perf_counter()
                    with open(mnt / small, "rb", buffering=0) as f:
                        f.read(1)
                    ttfbs.append(time.perf_counter() - t0)
                rmtree_force(c)
            s3 = ctx.s3
            for _ in range(5):
                t0 = time.perf_counter()
                s3.get_object(Bucket=BUCKET, Key=f"plain/{small}")["Body"].read()
                one_gets.append(time.perf_counter() - t0)
            ttfb, one = statistics.median(ttfbs), statistics.median(one_gets)
            res.add(
                "ttfb.fsmount",
                ttfb * 1000,
                "ms",
                f"open + read(1) of a {(src / small).stat().st_size // 1024} KiB "
                "file, fresh mount and cache, median of 3",
            )
            res.add(
                "ttfb.one_get", one * 1000, "ms", "one GET of the same file as a plain object, median of 5"
            )
            res.add("ttfb.ratio", ttfb / one, "x", "target <= 3")
            if packs:  # none when packing is off (FSMOUNT_PACK_THRESHOLD=0)
                size = (src / small).stat().st_size
                ranged = []
                for _ in range(5):
                    t0 = time.perf_counter()
                    s3.get_object(Bucket=BUCKET, Key=max(packs), Range=f"bytes=0-{size - 1}")["Body"].read()
                    ranged.append(time.perf_counter() - t0)
                one_ranged = statistics.median(ranged)
                res.add(
                    "ttfb.one_ranged_get",
                    one_ranged * 1000,
                    "ms",
                    f"one ranged GET of {size} bytes of a pack, median of 5 (what a lone miss costs; "
                    "moto reads the whole pack for it)",
                )
                res.add("ttfb.ratio_ranged", ttfb / one_ranged, "x", "fsmount first byte / one ranged GET")

            for name, mounter in (("rclone", ctx.rclone), ("s3fs", ctx.s3fs)):
                if name in skip:
                    continue
                if not shutil_which(name):
                    print(f"# {name}: not installed (make bench-deps installs it); skipped", file=sys.stderr)
                    continue
                sub = rel[: args.baseline_files] if args.baseline_files else rel
                with mounter("plain", "epoch") as m:
                    t, _ = read_epoch(m, sub, threads)
                rate = len(sub) / t
                res.add(
                    f"epoch.{name}",
                    rate,
                    "files/s",
                    f"cold, {len(sub):,} of the files, {threads} threads, shuffled",
                )
                res.add(f"epoch.cold.ratio_{name}", cold / rate, "x", "fsmount cold / it, target >= 5")

            why = "skipped (--skip torch)" if "torch" in skip else torch_available()
            if not why and kind != "jpeg":
                why = "the files are not JPEGs"
            if why:
                print(f"# torch: {why}", file=sys.stderr)
            else:
                drop_page_cache()
                r = torch_epoch(src, 4)
                res.add(
                    "torch.local",
                    r["images"] / r["epoch"],
                    "images/s",
                    f"ImageFolder + DataLoader(num_workers=4, shuffle=True), local folder, "
                    f"page cache dropped; "
                    f"scan {r['scan']:.1f} s",
                )
                local_rate = r["images"] / r["epoch"]
                c = work / "cache-torch"
                with mounted(ctx, ref, "torch", c) as (mnt, _):
                    r = torch_epoch(mnt, 4)
                res.add(
                    "torch.cold.fsmount",
                    r["images"] / r["epoch"],
                    "images/s",
                    f"the same over a fresh mount and empty cache; scan {r['scan']:.1f} s",
                )
                res.add(
                    "torch.cold.ratio_local", r["images"] / r["epoch"] / local_rate, "x", "fsmount / local"
                )
                with mounted(ctx, ref, "torch", c) as (mnt, _):
                    drop_page_cache()
                    r = torch_epoch(mnt, 4)
                res.add(
                    "torch.warm.fsmount",
                    r["images"] / r["epoch"],
                    "images/s",
                    f"the same after a remount on the filled cache, page cache dropped; "
                    f"scan {r['scan']:.1f} s",
                )
                res.add(
                    "torch.warm.ratio_local", r["images"] / r["epoch"] / local_rate, "x", "fsmount / local"
                )
        finally:
            for m in work.glob("mnt-*"):
                umount(m)
            res.add("moto.cpu", moto.cpu_seconds(), "s", "moto server CPU over the whole run")
    res.print_all()


def shutil_which(name: str) -> bool:
    import shutil

    return shutil.which(name) is not None


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="2,000 files in 20 folders")
    ap.add_argument("--files", type=int, default=20_000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--min-kib", type=int, default=8)
    ap.add_argument("--max-kib", type=int, default=96)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument(
        "--baseline-files",
        type=int,
        default=0,
        help="read only this many of the files through rclone/s3fs (0: all)",
    )
    ap.add_argument("--skip", default="", help="comma list of rclone,s3fs,torch")
    args = ap.parse_args(argv)
    if args.quick:
        args.files, args.dirs = min(args.files, 2_000), min(args.dirs, 20)
    args.skip = [s for s in args.skip.split(",") if s]
    if args.files < args.dirs:
        ap.error("--files must be at least --dirs")
    run(args)


if __name__ == "__main__":
    threading.excepthook = lambda a: print(f"thread failed: {a.exc_value}", file=sys.stderr)
    main()
