"""Datasets: `fsmount sync` and `fsmount get` against plain parallel boto3, on one moto server.

    .venv/bin/python bench/bench_dataset.py                       # 1 GiB file + 5,000 x 16 KiB
    .venv/bin/python bench/bench_dataset.py --size-gib 0.1 --small-files 500   # quick (< 1 min)
    .venv/bin/python bench/bench_dataset.py --profile /tmp/prof    # also profile fsmount (py-spy)

Phases, in one run against the same moto server (each side in its own bucket):

  (a) upload: `fsmount sync` of the folder (CLI subprocess, FSMOUNT_STORE=s3://..., fresh
      XDG_DATA_HOME/XDG_CACHE_HOME) versus boto3 upload_file of the same files through a
      ThreadPoolExecutor of 16 (default TransferConfig, so the big file goes multipart).
  (b) download: `fsmount get REF` with a fresh cache versus boto3 download_file of the same
      objects (16 threads) into a local folder.
  (c) a second `fsmount get REF` on the warm cache, and `fsmount get REF --copy DIR` from the
      warm cache: both should fetch no object from the store (counted in moto's request log).

MB/s is 10^6 bytes of dataset content per second of wall time. The ratio is fsmount/boto3
(target >= 0.8). Everything created (temp folders, the moto process) is removed at the end.
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import (
    GiB,
    MotoServer,
    Results,
    Timer,
    machine_summary,
    rmtree_force,
    run_cli,
    s3_client,
    s3_env,
    self_cpu_seconds,
    temp_dir,
    tree_bytes,
    write_random_file,
    write_small_files,
)

FSMOUNT_BUCKET = "fsmount-bench"
FSMOUNT_PREFIX = "store"
BASELINE_BUCKET = "baseline-bench"
TARGET_RATIO = 0.8


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=1.0, help="size of the one big random file (GiB)")
    p.add_argument("--small-files", type=int, default=5000, help="number of small random files")
    p.add_argument("--small-kib", type=int, default=16, help="size of each small file (KiB)")
    p.add_argument("--workers", type=int, default=16, help="threads of the boto3 baseline")
    p.add_argument("--ranged-baseline", action="store_true",
                   help="also time boto3's default download (8 MiB ranged GETs; slow on moto,"
                        " see boto3_download)")
    p.add_argument("--profile", type=Path, default=None,
                   help="folder for profiles: run the fsmount commands under a sampling profiler"
                        " (this slows them down; the timings of such a run are not the benchmark's)")
    p.add_argument("--profiler", choices=("py-spy", "pyinstrument"), default="py-spy")
    p.add_argument("--json-out", type=Path, default=None, help="also write the JSON lines to this file")
    return p.parse_args(argv)


def last_json(stdout: str) -> dict:
    """The command's --json object (a profiler may print its own lines around it)."""
    for line in reversed(stdout.splitlines()):
        if line.startswith("{"):
            return json.loads(line)
    raise RuntimeError(f"no JSON object in the output:\n{stdout[-2000:]}")


def mb_per_s(nbytes: int, seconds: float) -> float:
    return nbytes / 1e6 / seconds if seconds > 0 else 0.0


def relative_files(folder: Path) -> list[tuple[Path, str]]:
    out = []
    for dirpath, _, names in os.walk(folder):
        for n in names:
            full = Path(dirpath) / n
            out.append((full, full.relative_to(folder).as_posix()))
    out.sort(key=lambda x: -x[0].stat().st_size)  # the big file first, as a user would queue it
    return out


def boto3_upload(endpoint: str, folder: Path, workers: int) -> int:
    from boto3.s3.transfer import TransferConfig

    client = s3_client(endpoint, max_pool=64)
    config = TransferConfig()
    files = relative_files(folder)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda fk: client.upload_file(str(fk[0]), BASELINE_BUCKET, fk[1], Config=config),
                      files))
    client.close()
    return len(files)


def boto3_download(endpoint: str, target: Path, workers: int, ranged: bool = False) -> int:
    """download_file of every object, `workers` at a time.

    ranged=False sets multipart_threshold above any object, so each object is one GET: moto
    answers a ranged GET by reading the whole object first, which makes boto3's default
    8 MiB ranged GETs of a 1 GiB object cost O(n^2) on the server and would flatter fsmount.
    """
    from boto3.s3.transfer import TransferConfig

    client = s3_client(endpoint, max_pool=64)
    config = TransferConfig() if ranged else TransferConfig(multipart_threshold=2**50)
    keys = [o["Key"] for page in client.get_paginator("list_objects_v2").paginate(Bucket=BASELINE_BUCKET)
            for o in page.get("Contents", ())]
    for d in {str((target / k).parent) for k in keys}:
        os.makedirs(d, exist_ok=True)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda k: client.download_file(BASELINE_BUCKET, k, str(target / k), Config=config),
                      keys))
    client.close()
    return len(keys)


def same_content(a: Path, b: Path, sample: int = 50) -> bool:
    """Compare the biggest file and a sample of the others byte for byte, and the file counts."""
    fa, fb = relative_files(a), relative_files(b)
    if len(fa) != len(fb):
        return False
    picks = fa[:1] + fa[1 :: max(1, len(fa) // sample)]
    return all(filecmp.cmp(p, b / rel, shallow=False) for p, rel in picks)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    big = int(args.size_gib * GiB)
    small = args.small_kib * 1024
    res = Results(f"Datasets: sync and get ({args.size_gib:g} GiB file + {args.small_files:,} x "
                  f"{args.small_kib} KiB; {machine_summary()})")
    with temp_dir() as tmp:
        data = tmp / "data"
        t_gen = time.perf_counter()
        write_random_file(data / "big.bin", big)
        write_small_files(data / "small", args.small_files, small)
        nfiles, nbytes = tree_bytes(data)
        print(f"# test data: {nfiles} files, {nbytes / 1e6:,.1f} MB in {time.perf_counter() - t_gen:.1f} s",
              file=sys.stderr)

        (tmp / "moto").mkdir()
        with MotoServer(tmp / "moto") as moto:
            print(f"# moto_server pid {moto.pid} at {moto.url}", file=sys.stderr)
            admin = s3_client(moto.url)
            for b in (FSMOUNT_BUCKET, BASELINE_BUCKET):
                admin.create_bucket(Bucket=b)
            admin.close()

            env = s3_env(moto.url) | {"FSMOUNT_STORE": f"s3://{FSMOUNT_BUCKET}/{FSMOUNT_PREFIX}"}

            def xdg(name: str) -> dict[str, str]:
                home = tmp / name
                for sub in ("data", "cache", "config"):
                    (home / sub).mkdir(parents=True, exist_ok=True)
                return {"XDG_DATA_HOME": str(home / "data"), "XDG_CACHE_HOME": str(home / "cache"),
                        "XDG_CONFIG_HOME": str(home / "config")}

            def prof(name: str) -> Path | None:
                if args.profile is None:
                    return None
                args.profile.mkdir(parents=True, exist_ok=True)
                ext = "collapsed.txt" if args.profiler == "py-spy" else "txt"
                return args.profile / f"{name}.{ext}"

            # (a) upload --------------------------------------------------------------
            writer_env = env | xdg("writer")
            off, cpu0 = moto.log_offset(), moto.cpu_seconds()
            r = run_cli(["sync", "--folder", str(data), "--project", "bench", "--name", "ds", "--json", "-q"],
                        writer_env, profile=prof("sync"), profiler=args.profiler)
            sync_out = last_json(r.stdout)
            ref = sync_out["id"]
            assert len(sync_out["added"]) == nfiles, "sync did not add every file"
            sync_srv_cpu = moto.cpu_seconds() - cpu0
            sync_reqs = {m: moto.count_requests(off, m) for m in ("PUT", "HEAD", "GET", "POST")}
            res.add("sync.fsmount", mb_per_s(nbytes, r.seconds), "MB/s", f"{r.seconds:.2f} s wall")
            res.add("sync.fsmount.cpu", r.cpu_seconds, "s", "fsmount process CPU")
            res.add("sync.fsmount.server_cpu", sync_srv_cpu, "s", "moto CPU during the phase")
            res.add("sync.fsmount.requests", sum(sync_reqs.values()), "requests",
                    " ".join(f"{k}={v}" for k, v in sync_reqs.items()))

            off, cpu0, self0 = moto.log_offset(), moto.cpu_seconds(), self_cpu_seconds()
            with Timer() as t:
                boto3_upload(moto.url, data, args.workers)
            up_srv_cpu = moto.cpu_seconds() - cpu0
            up_reqs = {m: moto.count_requests(off, m) for m in ("PUT", "HEAD", "GET", "POST")}
            res.add("sync.boto3", mb_per_s(nbytes, t.seconds), "MB/s", f"{t.seconds:.2f} s wall")
            res.add("sync.boto3.cpu", self_cpu_seconds() - self0, "s", "client CPU")
            res.add("sync.boto3.server_cpu", up_srv_cpu, "s", "moto CPU during the phase")
            res.add("sync.boto3.requests", sum(up_reqs.values()), "requests",
                    " ".join(f"{k}={v}" for k, v in up_reqs.items()))
            sync_ratio = t.seconds / r.seconds
            res.add("sync.ratio", sync_ratio, "x", f"fsmount/boto3, target >= {TARGET_RATIO}")

            # (b) download ---------------------------------------------------------------
            reader_env = env | xdg("reader")
            off, cpu0 = moto.log_offset(), moto.cpu_seconds()
            r = run_cli(["get", ref, "--json", "-q"], reader_env, profile=prof("get"), profiler=args.profiler)
            copy_path = Path(last_json(r.stdout)["path"])
            get_srv_cpu = moto.cpu_seconds() - cpu0
            get_objs = moto.count_requests(off, "GET", "/objects/")
            get_reqs = moto.count_requests(off)
            res.add("get.fsmount", mb_per_s(nbytes, r.seconds), "MB/s", f"{r.seconds:.2f} s wall")
            res.add("get.fsmount.cpu", r.cpu_seconds, "s", "fsmount process CPU")
            res.add("get.fsmount.server_cpu", get_srv_cpu, "s", "moto CPU during the phase")
            res.add("get.fsmount.objects_fetched", get_objs, "objects", f"{get_reqs} requests in all")
            if not same_content(data, copy_path):
                raise SystemExit("fsmount get produced different content")

            dl = tmp / "download"
            off, cpu0, self0 = moto.log_offset(), moto.cpu_seconds(), self_cpu_seconds()
            with Timer() as t:
                boto3_download(moto.url, dl, args.workers)
            dl_srv_cpu = moto.cpu_seconds() - cpu0
            res.add("get.boto3", mb_per_s(nbytes, t.seconds), "MB/s",
                    f"{t.seconds:.2f} s wall, one GET per object")
            res.add("get.boto3.cpu", self_cpu_seconds() - self0, "s", "client CPU")
            res.add("get.boto3.server_cpu", dl_srv_cpu, "s", "moto CPU during the phase")
            res.add("get.boto3.requests", moto.count_requests(off), "requests")
            if not same_content(data, dl):
                raise SystemExit("boto3 download produced different content")
            get_ratio = t.seconds / r.seconds
            res.add("get.ratio", get_ratio, "x", f"fsmount/boto3, target >= {TARGET_RATIO}")

            if args.ranged_baseline:
                dl2 = tmp / "download-ranged"
                off, cpu0 = moto.log_offset(), moto.cpu_seconds()
                with Timer() as t2:
                    boto3_download(moto.url, dl2, args.workers, ranged=True)
                res.add("get.boto3_ranged", mb_per_s(nbytes, t2.seconds), "MB/s",
                        f"default TransferConfig, {t2.seconds:.2f} s,"
                        f" moto CPU {moto.cpu_seconds() - cpu0:.1f} s")
                res.add("get.boto3_ranged.requests", moto.count_requests(off), "requests")
                rmtree_force(dl2)

            # (c) warm cache ----------------------------------------------------------------
            off = moto.log_offset()
            r = run_cli(["get", ref, "--json", "-q"], reader_env)
            res.add("get.warm.seconds", r.seconds, "s", "second `fsmount get` (cached copy)")
            res.add("get.warm.objects_fetched", moto.count_requests(off, "GET", "/objects/"), "objects",
                    f"{moto.count_requests(off)} requests in all")

            off = moto.log_offset()
            copy2 = tmp / "copy2"
            r = run_cli(["get", ref, "--copy", str(copy2), "--json", "-q"], reader_env)
            res.add("get.warm_copy", mb_per_s(nbytes, r.seconds), "MB/s",
                    f"`get --copy` from the warm cache, {r.seconds:.2f} s")
            res.add("get.warm_copy.objects_fetched", moto.count_requests(off, "GET", "/objects/"), "objects",
                    f"{moto.count_requests(off)} requests in all")
            if not same_content(data, copy2):
                raise SystemExit("fsmount get --copy produced different content")
            print(f"# moto_server pid {moto.pid} stopping", file=sys.stderr)

    res.print_all()
    if args.json_out:
        with open(args.json_out, "w") as f:
            res.print_json_lines(file=f)
    ok = sync_ratio >= TARGET_RATIO and get_ratio >= TARGET_RATIO
    print(f"\nsync ratio {sync_ratio:.2f}, get ratio {get_ratio:.2f}: "
          f"{'both meet' if ok else 'below'} the target of {TARGET_RATIO}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
