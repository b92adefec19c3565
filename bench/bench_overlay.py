"""Writable overlays: sequential write, commit and untar, each side by side with its baseline, one run.

    .venv/bin/python bench/bench_overlay.py                                  # the issue's sizes
    .venv/bin/python bench/bench_overlay.py --size-gib 0.1 --small-files 500 --tar-files 1000  # quick

Phases:

  (1) write: `dd`-style sequential write of SIZE GiB (1 MiB writes, then fsync) into a writable
      mount versus the same bytes into a plain file on the same disk as the overlay.
      Target: >= 0.5x. Needs /dev/fuse; skipped (reported) without it or with --no-mount.
  (2) commit: an overlay holding one new SIZE GiB file and SMALL x 16 KiB new files, committed
      (in-process, the same code `fsmount commit` runs in the daemon) to a moto S3 server, versus
      boto3 upload_file of the same files with 16 threads to the same server. Target: >= 0.8x.
  (3) untar: `tar x` of a TAR-FILES archive into the writable mount versus into a local folder.
      Target: >= 0.3x. Needs /dev/fuse.

Every figure is printed as a JSON line {"name", "value", "unit"} and in a table at the end.
Everything created (temp folders, the moto process, mounts) is removed by PID/path at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import shutil
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    FSMOUNT,
    GiB,
    MiB,
    MotoServer,
    Results,
    Timer,
    machine_summary,
    s3_client,
    s3_env,
    temp_dir,
    write_random_file,
    write_small_files,
)

BUCKET = "fsmount-overlay-bench"
BASELINE_BUCKET = "baseline-overlay-bench"


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--size-gib", type=float, default=1.0)
    p.add_argument("--small-files", type=int, default=5000)
    p.add_argument("--tar-files", type=int, default=10000)
    p.add_argument("--workers", type=int, default=16)
    p.add_argument("--no-mount", action="store_true", help="only the commit phase (no FUSE needed)")
    return p.parse_args(argv)


def write_sequential(path: Path, size: int, chunk: int = MiB) -> None:
    buf = os.urandom(chunk)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o644)
    try:
        left = size
        while left > 0:
            left -= os.write(fd, buf[: min(chunk, left)])
        os.fsync(fd)
    finally:
        os.close(fd)


def boto3_upload(endpoint: str, folder: Path, workers: int) -> None:
    client = s3_client(endpoint)
    files = [Path(d) / n for d, _, names in os.walk(folder) for n in names]
    files.sort(key=lambda f: -f.stat().st_size)
    with ThreadPoolExecutor(workers) as pool:
        list(pool.map(lambda f: client.upload_file(str(f), BASELINE_BUCKET, str(f.relative_to(folder))),
                      files))
    client.close()


@contextlib.contextmanager
def writable_mount(ref: str, mountpoint: Path, env: dict[str, str]):  # type: ignore[no-untyped-def]
    mountpoint.mkdir(parents=True, exist_ok=True)
    subprocess.run([str(FSMOUNT), "mount", ref, str(mountpoint), "--write"], env=env, check=True,
                   capture_output=True, text=True)
    try:
        yield mountpoint
    finally:
        r = subprocess.run([str(FSMOUNT), "umount", str(mountpoint)], env=env, capture_output=True)
        if r.returncode != 0 and os.path.ismount(mountpoint):
            subprocess.run(["fusermount3", "-u", "-z", str(mountpoint)], check=False)


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    big = int(args.size_gib * GiB)
    res = Results(f"Overlays: write, commit, untar ({args.size_gib:g} GiB; {args.small_files:,} x 16 KiB; "
                  f"tar of {args.tar_files:,} files; {machine_summary()})")
    with temp_dir("fsmount-overlay-bench-") as tmp:
        (tmp / "moto").mkdir()
        with MotoServer(tmp / "moto") as moto:
            admin = s3_client(moto.url)
            for b in (BUCKET, BASELINE_BUCKET):
                admin.create_bucket(Bucket=b)
            admin.close()
            env = {**os.environ, **s3_env(moto.url), "FSMOUNT_STORE": f"s3://{BUCKET}/store"}
            for sub in ("data", "cache", "config"):
                (tmp / "home" / sub).mkdir(parents=True)
                env[f"XDG_{sub.upper()}_HOME"] = str(tmp / "home" / sub)
            os.environ.update({k: v for k, v in env.items() if k.startswith(("AWS_", "XDG_", "FSMOUNT_"))})

            from fsmount import Dataset
            from fsmount.api.workspace import Workspace
            from fsmount.overlay.commit import commit_upper
            from fsmount.overlay.merged import MergedView
            from fsmount.overlay.upper import UpperLayer

            ws = Workspace()
            seed = tmp / "seed"
            write_small_files(seed, 10, 1024)
            base = Dataset.create("bench", "overlay", workspace=ws)
            base.add_files(seed)
            base.finalize()

            # (2) commit -------------------------------------------------------------------
            data = tmp / "data"
            write_random_file(data / "big.bin", big)
            write_small_files(data / "small", args.small_files, 16 * 1024)
            upper = UpperLayer(tmp / "overlay")
            upper.bind(base.id, base.record.root)
            view = MergedView(upper, ws.reader, base.record.root)
            view.mkdir("small")
            for f in [data / "big.bin", *sorted((data / "small").iterdir())]:
                fh = view.create(str(f.relative_to(data)))
                view.write(fh, 0, f.read_bytes()) if f.stat().st_size < 64 * MiB else _copy(view, fh, f)
                view.release(fh)
            nbytes = big + args.small_files * 16 * 1024
            with Timer() as t_commit:
                result = commit_upper(upper, ws, message="bench")
            upper.close()
            assert result.record is not None
            with Timer() as t_boto:
                boto3_upload(moto.url, data, args.workers)
            res.add("commit.fsmount", nbytes / 1e6 / t_commit.seconds, "MB/s", f"{t_commit.seconds:.2f} s")
            res.add("commit.boto3", nbytes / 1e6 / t_boto.seconds, "MB/s", f"{t_boto.seconds:.2f} s")
            res.add("commit.ratio", t_boto.seconds / t_commit.seconds, "x", "target >= 0.8")
            shutil.rmtree(data)

            mount_ok = not args.no_mount and os.path.exists("/dev/fuse") and shutil.which("fusermount3")
            if mount_ok:
                ref = result.record.id
                # (1) sequential write ------------------------------------------------------
                local = tmp / "home" / "data" / "plain.bin"
                with Timer() as t_local:
                    write_sequential(local, big)
                local.unlink()
                with writable_mount(ref, tmp / "mnt", env) as mp:
                    with Timer() as t_mount:
                        write_sequential(mp / "seq.bin", big)
                    res.add("write.fsmount", big / 1e6 / t_mount.seconds, "MB/s", f"{t_mount.seconds:.2f} s")
                    res.add("write.local", big / 1e6 / t_local.seconds, "MB/s", f"{t_local.seconds:.2f} s")
                    res.add("write.ratio", t_local.seconds / t_mount.seconds, "x", "target >= 0.5")
                    os.unlink(mp / "seq.bin")

                    # (3) untar ----------------------------------------------------------------
                    src = tmp / "tarsrc"
                    for i in range(args.tar_files):
                        d = src / f"d{i // 500:03d}"
                        d.mkdir(parents=True, exist_ok=True)
                        (d / f"f{i:05d}.txt").write_bytes(os.urandom(1024))
                    archive = tmp / "files.tar"
                    with tarfile.open(archive, "w") as tf:
                        tf.add(src, arcname="files")
                    (tmp / "untar").mkdir()
                    # Both sides start with no dirty pages: writeback left by the phases above
                    # (1 GiB written and deleted, the archive just made) made the local side 10x
                    # slower in some runs and flattered the ratio.
                    os.sync()
                    with Timer() as t_ul:
                        subprocess.run(["tar", "xf", str(archive), "-C", str(tmp / "untar")], check=True)
                    os.sync()
                    with Timer() as t_um:
                        subprocess.run(["tar", "xf", str(archive), "-C", str(mp)], check=True)
                    res.add("untar.fsmount", args.tar_files / t_um.seconds, "files/s",
                            f"{t_um.seconds:.2f} s")
                    res.add("untar.local", args.tar_files / t_ul.seconds, "files/s", f"{t_ul.seconds:.2f} s")
                    res.add("untar.ratio", t_ul.seconds / t_um.seconds, "x", "target >= 0.3")
                    subprocess.run([str(FSMOUNT), "discard", str(mp), "--yes"], env=env, check=False,
                                   capture_output=True)
            else:
                print("# mount phases skipped (no FUSE or --no-mount)", file=sys.stderr)
            ws.close()
    res.print_all()
    return 0


def _copy(view, fh: int, f: Path) -> None:  # type: ignore[no-untyped-def]
    pos = 0
    with open(f, "rb") as src:
        while chunk := src.read(16 * MiB):
            view.write(fh, pos, chunk)
            pos += len(chunk)


if __name__ == "__main__":
    sys.exit(main())
