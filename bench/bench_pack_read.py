"""Packed small files through the mount (issue 10's read path), against local moto, in one run.

    .venv/bin/python bench/bench_pack_read.py --files 5000 --pack-mib 8
    .venv/bin/python bench/bench_pack_read.py --files 2000 --profile /tmp/prof   # py-spy the warm epoch

Figures: first byte of one small file on a fresh mount vs one boto3 GET of an object that size;
a cold shuffled 16-thread epoch (files/s, GETs seen by moto vs packs) next to the shard ceiling
(each pack one boto3 GET, 16 threads) and one boto3 GET per file; the warm epoch (remount on the
filled cache, page cache dropped, and hot) vs the same files in a local folder.
The version is written with the format layer (tests/pack_fixtures.py), not by a packing commit.
"""

from __future__ import annotations

import argparse
import os
import random
import statistics
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.bench_mount import BUCKET, Ctx, LiveResults, Profiler, daemon_status, umount
from bench.common import FSMOUNT, MotoServer, drop_page_cache, machine_summary, s3_env, temp_dir
from fsmount.format.hashing import object_key
from tests.pack_fixtures import MiB, make_packed_version, small_files

STORE = f"s3://{BUCKET}/packs"


def epoch(paths: list[Path], threads: int, seed: int = 1) -> float:
    order = list(paths)
    random.Random(seed).shuffle(order)

    def one(p: Path) -> int:
        with open(p, "rb") as f:
            return len(f.read())

    t = time.perf_counter()
    with ThreadPoolExecutor(threads) as pool:
        sum(pool.map(one, order))
    return len(order) / (time.perf_counter() - t)


def mount(ctx: Ctx, ref: str, mnt: Path, cache: Path) -> float:
    mnt.mkdir(parents=True, exist_ok=True)
    t = time.perf_counter()
    subprocess.run([str(FSMOUNT), "mount", ref, str(mnt), "--store", STORE, "--cache-dir", str(cache)],
                   check=True, env=ctx.env)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--files", type=int, default=5000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--pack-mib", type=int, default=8)
    ap.add_argument("--threads", type=int, default=16)
    ap.add_argument("--profile", type=Path, default=None)
    args = ap.parse_args()
    res = LiveResults("packed small files (issue 10 read path)")
    with temp_dir() as work, MotoServer(work) as moto:
        os.environ.update(s3_env(moto.url))  # for the fixture's store writes, and every child
        env = dict(os.environ)
        ctx = Ctx(args, work, moto, res, env)
        s3 = ctx.s3
        s3.create_bucket(Bucket=BUCKET)
        files = small_files(args.files, args.dirs)
        pv = make_packed_version(STORE, files, pack_size=args.pack_mib * MiB)
        total = sum(len(d) for d in files.values())
        note = f"{len(files)} files, {total / MiB:.0f} MiB, {len(pv.packs)} packs of {args.pack_mib} MiB"
        print(f"# {note}; {machine_summary()}", file=sys.stderr)

        # first byte of one small file vs one small GET
        sample = sorted(files)[len(files) // 2]
        s3.put_object(Bucket=BUCKET, Key="plain/one.bin", Body=files[sample])
        gets, ttfbs, mounts = [], [], []
        for i in range(5):
            t = time.perf_counter()
            s3.get_object(Bucket=BUCKET, Key="plain/one.bin")["Body"].read()
            gets.append(time.perf_counter() - t)
            mnt = work / f"mnt-ttfb{i}"
            mounts.append(mount(ctx, pv.id, mnt, work / f"cache-ttfb{i}"))
            t = time.perf_counter()
            with open(mnt / sample, "rb") as f:
                f.read(1)
            ttfbs.append(time.perf_counter() - t)
            umount(mnt)
        res.add("mount_s", statistics.median(mounts), "s", "fsmount mount until it returns (median of 5)")
        res.add("one_get_ms", 1000 * statistics.median(gets), "ms", f"boto3 GET of {len(files[sample])} B")
        res.add("ttfb_ms", 1000 * statistics.median(ttfbs), "ms", "open+read(1) of that file, fresh mount")
        res.add("ttfb_vs_get", statistics.median(ttfbs) / statistics.median(gets), "x", "target <= 3")

        # the shard ceiling and one GET per file (plain boto3, 16 threads)
        def get_pack(h: bytes) -> int:
            return len(s3.get_object(Bucket=BUCKET, Key=f"packs/{object_key(h)}")["Body"].read())
        t = time.perf_counter()
        with ThreadPoolExecutor(args.threads) as pool:
            list(pool.map(get_pack, pv.packs))
        res.add("ceiling_files_s", len(files) / (time.perf_counter() - t), "files/s", "each pack one GET")

        # cold epoch
        cache = work / "cache"
        mnt = work / "mnt"
        mount(ctx, pv.id, mnt, cache)
        since = moto.log_offset()
        rate = epoch([mnt / p for p in files], args.threads)
        c = daemon_status(mnt, env)["counters"]
        umount(mnt)
        seen = moto.count_requests(since, "GET", "/objects/")
        res.add("cold_files_s", rate, "files/s", note)
        res.add("cold_gets_per_pack", (c["pack_fetches"] + c["ranged_reads"]) / len(pv.packs), "x",
                f"pack_fetches={c['pack_fetches']} ranged={c['ranged_reads']} moto object GETs={seen} "
                f"(trees included); target <= 1.2")

        # warm epochs vs a local folder
        local = work / "local"
        for p, d in files.items():
            (local / p).parent.mkdir(parents=True, exist_ok=True)
            (local / p).write_bytes(d)
        for hot in (False, True):
            if hot:  # the cache's files in the page cache; a remount so the mount's own page cache is empty
                mount(ctx, pv.id, mnt, cache)
                epoch([mnt / p for p in files], args.threads, seed=3)
                umount(mnt)
            else:
                drop_page_cache()
            mount(ctx, pv.id, mnt, cache)
            sum(len(fs) for _, _, fs in os.walk(mnt))  # as ImageFolder does (readdirplus: no LOOKUPs)
            prof = None
            if args.profile is not None:
                pid = daemon_status(mnt, env)["pid"]
                prof = Profiler(args.profile, f"warm-{'hot' if hot else 'cold'}", pid)
            rate = epoch([mnt / p for p in files], args.threads, seed=5)
            if prof is not None:
                prof.stop()
            c = daemon_status(mnt, env)["counters"]
            umount(mnt)
            if hot:
                epoch([local / p for p in files], args.threads, seed=3)
            else:
                drop_page_cache()
            sum(len(fs) for _, _, fs in os.walk(local))
            base = epoch([local / p for p in files], args.threads, seed=5)
            kind = "page cache hot" if hot else "page cache dropped"
            res.add(f"warm_{'hot' if hot else 'cold'}_files_s", rate, "files/s",
                    f"{kind}; packed_fast={c['packed_fast']} gets={c['store']['gets']}")
            res.add(f"local_{'hot' if hot else 'cold'}_files_s", base, "files/s", kind)
            res.add(f"warm_{'hot' if hot else 'cold'}_vs_local", rate / base, "x", "target >= 0.7")
    res.print_all()


if __name__ == "__main__":
    main()
