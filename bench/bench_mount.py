"""Mount benchmarks against a local moto server: prints one {name, value, unit} JSON object per line.

Usage: python bench/bench_mount.py [--size-mib 1024] [--files 2000]
Measures cold and warm sequential read of one big file (next to a plain boto3 GET of the same
bytes as one object), time to first byte, and cold find+stat over many small files.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import boto3

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from fsmount.api.dataset import Dataset
from fsmount.fs.mountpoint import is_mounted

CLI = [sys.executable, "-m", "fsmount.cli"]


def emit(name: str, value: float, unit: str) -> None:
    print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}), flush=True)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def drop_page_cache() -> None:
    try:
        subprocess.run(["sync"], check=True)
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
    except OSError:
        print("# cannot drop the page cache (not root?): warm figures include it", file=sys.stderr)


def read_all(path: Path, chunk: int = 1 << 20) -> int:
    n = 0
    with open(path, "rb", buffering=0) as f:
        while data := f.read(chunk):
            n += len(data)
    return n


def mount(ref: str, mnt: Path, store: str, cache: Path) -> None:
    mnt.mkdir(parents=True, exist_ok=True)
    subprocess.run([*CLI, "mount", ref, str(mnt), "--store", store, "--cache-dir", str(cache)], check=True)


def umount(mnt: Path) -> None:
    for args in (["-u"], ["-u", "-z"]):
        if is_mounted(mnt):
            subprocess.run(["fusermount3", *args, str(mnt)], capture_output=True)


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--size-mib", type=int, default=1024)
    ap.add_argument("--files", type=int, default=2000)
    args = ap.parse_args()
    work = Path(tempfile.mkdtemp(prefix="fsmount-bench-"))
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    moto_bin = str(Path(sys.executable).with_name("moto_server"))
    moto = subprocess.Popen([moto_bin, "-H", "127.0.0.1", "-p", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    mnts: list[Path] = []
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
                break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.05)
        os.environ.update(AWS_ENDPOINT_URL=url, AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench",
                          AWS_DEFAULT_REGION="us-east-1", XDG_DATA_HOME=str(work / "data"),
                          XDG_CACHE_HOME=str(work / "xdgcache"), FSMOUNT_RUNTIME_DIR=str(work / "run"))
        s3 = boto3.client("s3", endpoint_url=url)
        s3.create_bucket(Bucket="bench")
        store = "s3://bench/fsmount"

        big = work / "src" / "big.bin"
        big.parent.mkdir(parents=True)
        with open(big, "wb") as f:
            for _ in range(args.size_mib):
                f.write(os.urandom(1 << 20))
        size = big.stat().st_size
        s3.upload_file(str(big), "bench", "plain/big.bin")
        small = work / "small"
        for i in range(args.files):
            d = small / f"d{i // 100:03d}"
            d.mkdir(parents=True, exist_ok=True)
            (d / f"f{i:05d}.bin").write_bytes(os.urandom(16384))
        ds = Dataset.create(dataset_name="bench", dataset_project="bench", store=store)
        ds.add_files(big.parent)
        ds.add_files(small, dataset_path="small")
        ds.finalize()

        t = time.perf_counter()
        body = s3.get_object(Bucket="bench", Key="plain/big.bin")["Body"].read()
        boto_s = time.perf_counter() - t
        emit("boto3_get_one_object", len(body) / boto_s / 1e6, "MB/s")
        del body
        block = ds.record.block_size
        s3.put_object(Bucket="bench", Key="plain/one-block", Body=os.urandom(block))
        t = time.perf_counter()
        s3.get_object(Bucket="bench", Key="plain/one-block")["Body"].read()
        one_get = time.perf_counter() - t
        emit("boto3_get_one_block", one_get * 1000, "ms")

        mnt = work / "mnt"
        mnts.append(mnt)
        mount(ds.id, mnt, store, work / "cache")
        t = time.perf_counter()
        with open(mnt / "big.bin", "rb", buffering=0) as f:
            f.read(1)
        ttfb = time.perf_counter() - t
        emit("ttfb_cold_big_file", ttfb * 1000, "ms")
        emit("ttfb_over_one_get", ttfb / one_get, "x")
        umount(mnt)
        cache = work / "cache2"
        mount(ds.id, mnt, store, cache)
        t = time.perf_counter()
        n = read_all(mnt / "big.bin")
        cold = time.perf_counter() - t
        emit("cold_sequential_read", n / cold / 1e6, "MB/s")
        emit("cold_over_boto3", boto_s / cold, "x")
        umount(mnt)
        mount(ds.id, mnt, store, cache)
        drop_page_cache()
        t = time.perf_counter()
        read_all(mnt / "big.bin")
        warm = time.perf_counter() - t
        drop_page_cache()
        t = time.perf_counter()
        read_all(big)
        local = time.perf_counter() - t
        emit("warm_sequential_read", size / warm / 1e6, "MB/s")
        emit("local_sequential_read", size / local / 1e6, "MB/s")
        emit("warm_over_local", local / warm, "x")
        umount(mnt)
        mount(ds.id, mnt, store, work / "cache3")
        t = time.perf_counter()
        count = 0
        for dirpath, _, files in os.walk(mnt / "small"):
            for name in files:
                os.stat(os.path.join(dirpath, name))
                count += 1
        walk_s = time.perf_counter() - t
        emit("cold_find_stat", count / walk_s, "entries/s")
        status = json.loads(subprocess.run([*CLI, "status", str(mnt), "--json"], capture_output=True,
                                           text=True, check=True).stdout)
        pid = status["pid"]
        hwm = int(Path(f"/proc/{pid}/status").read_text().split("VmHWM:")[1].split()[0])
        emit("daemon_vmhwm_after_find", hwm / 1024, "MiB")
        umount(mnt)
    finally:
        for m in mnts:
            umount(m)
        moto.terminate()
        moto.wait(10)


if __name__ == "__main__":
    main()
