"""Writable overlays: sequential write, commit and untar, each side by side with its baseline, one run.

    .venv/bin/python bench/bench_overlay.py                                  # the issue's sizes
    .venv/bin/python bench/bench_overlay.py --size-gib 0.1 --small-files 500 --tar-files 1000  # quick
    .venv/bin/python bench/bench_overlay.py --phases untar --tar-files 10000 --rounds 3 --profile /tmp/untar

Phases:

  (1) write: `dd`-style sequential write of SIZE GiB (1 MiB writes, then fsync) into a writable
      mount versus the same bytes into a plain file on the same disk as the overlay.
      Target: >= 0.5x. Needs /dev/fuse; skipped (reported) without it or with --no-mount.
  (2) commit: an overlay holding one new SIZE GiB file and SMALL x 16 KiB new files, committed
      (in-process, the same code `fsmount commit` runs in the daemon) to a moto S3 server, versus
      boto3 upload_file of the same files with 16 threads to the same server. Target: >= 0.8x.
  (3) untar: `tar x` of a TAR-FILES archive into the writable mount versus into a local folder.
      Target: >= 0.3x. Needs /dev/fuse. `--rounds N` runs it N times (the two sides alternating,
      each round into a fresh mount); after each, the daemon's `slow_changes` and `offloaded`
      counters are shown. `--profile PREFIX` runs py-spy on the daemon during the (first) untar:
      PREFIX.txt (collapsed stacks, all threads, idle ones included) and PREFIX-top.txt.

Every figure is printed as a JSON line {"name", "value", "unit"} and in a table at the end.
Everything created (temp folders, the moto process, mounts) is removed by PID/path at the end.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import tarfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from common import (
    FSMOUNT,
    VENV_BIN,
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
    p.add_argument("--phases", default="commit,write,untar", help="comma-separated: commit, write, untar")
    p.add_argument("--rounds", type=int, default=1, help="untar rounds (a fresh mount each)")
    p.add_argument("--profile", default=None, help="py-spy the daemon during the first untar: PREFIX")
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
    phases = {x.strip() for x in args.phases.split(",") if x.strip()}
    big = int(args.size_gib * GiB)
    res = Results(f"Overlays: {', '.join(sorted(phases))} ({args.size_gib:g} GiB; {args.small_files:,} x "
                  f"16 KiB; tar of {args.tar_files:,} files; {machine_summary()})")
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

            ws = Workspace()
            seed = tmp / "seed"
            write_small_files(seed, 10, 1024)
            base = Dataset.create("bench", "overlay", workspace=ws)
            base.add_files(seed)
            base.finalize()
            ref = base.id
            if "commit" in phases:
                ref = commit_phase(args, tmp, ws, base, moto.url, res)

            mount_ok = not args.no_mount and os.path.exists("/dev/fuse") and shutil.which("fusermount3")
            if mount_ok and "write" in phases:
                write_phase(big, tmp, ref, env, res)
            if mount_ok and "untar" in phases:
                untar_phase(args, tmp, ref, env, res)
            if not mount_ok:
                print("# mount phases skipped (no FUSE or --no-mount)", file=sys.stderr)
            ws.close()
    res.print_all()
    return 0


def commit_phase(args: argparse.Namespace, tmp: Path, ws, base, endpoint: str,  # type: ignore[no-untyped-def]
                 res: Results) -> str:
    """(2): commit an overlay in-process vs boto3 upload_file of the same files; the new version's id."""
    from fsmount.overlay.commit import commit_upper
    from fsmount.overlay.merged import MergedView
    from fsmount.overlay.upper import UpperLayer

    big = int(args.size_gib * GiB)
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
        boto3_upload(endpoint, data, args.workers)
    res.add("commit.fsmount", nbytes / 1e6 / t_commit.seconds, "MB/s", f"{t_commit.seconds:.2f} s")
    res.add("commit.boto3", nbytes / 1e6 / t_boto.seconds, "MB/s", f"{t_boto.seconds:.2f} s")
    res.add("commit.ratio", t_boto.seconds / t_commit.seconds, "x", "target >= 0.8")
    shutil.rmtree(data)
    return result.record.id


def write_phase(big: int, tmp: Path, ref: str, env: dict[str, str], res: Results) -> None:
    """(1): sequential write into the mount vs a plain file on the overlay's disk."""
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
        subprocess.run([str(FSMOUNT), "discard", str(mp), "--yes"], env=env, check=False, capture_output=True)


def untar_phase(args: argparse.Namespace, tmp: Path, ref: str, env: dict[str, str], res: Results) -> None:
    """(3): `tar x` into the mount vs into a local folder, `--rounds` times, the sides alternating."""
    src = tmp / "tarsrc"
    for i in range(args.tar_files):
        d = src / f"d{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"f{i:05d}.txt").write_bytes(os.urandom(1024))
    archive = tmp / "files.tar"
    with tarfile.open(archive, "w") as tf:
        tf.add(src, arcname="files")
    shutil.rmtree(src)
    for rnd in range(args.rounds):
        sfx = f".{rnd + 1}" if args.rounds > 1 else ""
        local = tmp / f"untar{rnd}"
        local.mkdir()
        # Both sides start with no dirty pages: writeback left by the phases above (1 GiB written
        # and deleted, the archive just made) made the local side 10x slower in some runs and
        # flattered the ratio.
        os.sync()
        with Timer() as t_ul:
            subprocess.run(["tar", "xf", str(archive), "-C", str(local)], check=True)
        shutil.rmtree(local)
        os.sync()
        with writable_mount(ref, tmp / f"mnt-untar{rnd}", env) as mp:
            spy = _py_spy(mp, args.profile) if args.profile and rnd == 0 else None
            try:
                with Timer() as t_um:
                    subprocess.run(["tar", "xf", str(archive), "-C", str(mp)], check=True)
            finally:
                if spy is not None:
                    spy.send_signal(signal.SIGINT)
                    spy.wait(60)
            st = subprocess.run([str(FSMOUNT), "status", str(mp), "--json"], env=env, capture_output=True,
                                text=True, check=False)
            counters = json.loads(st.stdout).get("counters", {}) if st.returncode == 0 else {}
            res.add(f"untar.fsmount{sfx}", args.tar_files / t_um.seconds, "files/s", f"{t_um.seconds:.2f} s")
            res.add(f"untar.local{sfx}", args.tar_files / t_ul.seconds, "files/s", f"{t_ul.seconds:.2f} s")
            res.add(f"untar.ratio{sfx}", t_ul.seconds / t_um.seconds, "x",
                    f"target >= 0.3; slow_changes {counters.get('slow_changes')}, offloaded "
                    f"{counters.get('offloaded')}, load {os.getloadavg()[0]:.1f}")
            subprocess.run([str(FSMOUNT), "discard", str(mp), "--yes"], env=env, check=False,
                           capture_output=True)


def _py_spy(mp: Path, prefix: str) -> subprocess.Popen[bytes]:
    """py-spy record of the daemon serving `mp` (all threads, idle included), until SIGINT."""
    pid = _daemon_pid(mp)
    return subprocess.Popen([str(VENV_BIN / "py-spy"), "record", "--pid", str(pid), "--rate", "250", "--idle",
                             "--threads", "--format", "raw", "-o", f"{prefix}.txt"],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def _daemon_pid(mp: Path) -> int:
    """The daemon serving `mp`, from its registration in the runtime folder."""
    from fsmount.fs import control

    return int(json.loads(control.info_path(str(mp)).read_text())["pid"])


def _copy(view, fh: int, f: Path) -> None:  # type: ignore[no-untyped-def]
    pos = 0
    with open(f, "rb") as src:
        while chunk := src.read(16 * MiB):
            view.write(fh, pos, chunk)
            pos += len(chunk)


if __name__ == "__main__":
    sys.exit(main())
