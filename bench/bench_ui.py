"""`fsmount ui` on a 1,000,000-file version: how long its pages take on a warm cache.

Builds (trees only, every file sharing one 1 KiB block, in a file:// store) a version of N files
in N/1000 folders, a child that modifies 10 files and adds 10, and a version of 100,000 files in
one folder; starts `fsmount ui` on a free
port, opens each page once (cold), then times R more loads of each (warm: the server's cache and
decoded-tree memory are filled) and reports the median and the worst. Target: a version page of
the 1,000,000-file version under one second warm.
"""

from __future__ import annotations

import argparse
import dataclasses
import http.client
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

from common import Results, machine_summary, temp_dir

from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit.finalize import ChangeSet, finalize
from fsmount.commit.registry import read_state
from fsmount.format.objects import FileEntry


def build(work: Path, nfiles: int, per_dir: int, flat_files: int) -> tuple[str, str, str, str]:
    """(store URL, big version id, child id, flat id): the child modifies 10 files and adds 10;
    the flat version has `flat_files` files in one folder."""
    store = f"file://{work / 'store'}"
    seed = work / "seed"
    seed.mkdir()
    (seed / "seed.bin").write_bytes(os.urandom(1024))
    (seed / "other.bin").write_bytes(os.urandom(1024))
    ws = Workspace(store, cache_dir=work / "cache-build")
    ds = Dataset.create(dataset_name="seed", dataset_project="bench", workspace=ws)
    ds.add_files(seed)
    ds.finalize()
    tree = ws.reader.tree(ds.record.root)
    entry, other = tree.get("seed.bin"), tree.get("other.bin")
    assert isinstance(entry, FileEntry) and isinstance(other, FileEntry)

    big = Dataset.create(dataset_name="million", dataset_project="bench", workspace=ws)
    changes = ChangeSet()
    for i in range(nfiles):
        name = f"f{i:07d}.bin"
        changes.puts[f"d{i // per_dir:05d}/{name}"] = dataclasses.replace(entry, name=name, origin=big.id)
    finalize(ws.store, ws.reader, read_state(ws.store, big.id), changes, block_size=entry.block_size)

    child = Dataset.create(dataset_name="million", dataset_project="bench", parent_datasets=[big.id],
                           workspace=ws)
    changes = ChangeSet()
    step = max(1, nfiles // 10)
    for i in range(0, nfiles, step):
        name = f"f{i:07d}.bin"
        changes.puts[f"d{i // per_dir:05d}/{name}"] = dataclasses.replace(other, name=name, origin=child.id)
        changes.puts[f"new/n{i:07d}.bin"] = dataclasses.replace(other, name=f"n{i:07d}.bin", origin=child.id)
    finalize(ws.store, ws.reader, read_state(ws.store, child.id), changes, block_size=entry.block_size)
    flat = Dataset.create(dataset_name="flat", dataset_project="bench", workspace=ws)
    changes = ChangeSet()
    for i in range(flat_files):
        name = f"f{i:07d}.bin"
        changes.puts[f"flat/{name}"] = dataclasses.replace(entry, name=name, origin=flat.id)
    finalize(ws.store, ws.reader, read_state(ws.store, flat.id), changes, block_size=entry.block_size)
    ws.close()
    return store, big.id, child.id, flat.id


def load(url: str, path: str) -> int:
    """GET `path` on a new connection, read the whole answer; its status."""
    host, port = url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=120)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        r.read()
        return r.status
    finally:
        conn.close()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", type=int, default=1_000_000)
    ap.add_argument("--per-dir", type=int, default=1000)
    ap.add_argument("--flat-files", type=int, default=100_000, help="files of the one-folder version")
    ap.add_argument("--repeat", type=int, default=20)
    args = ap.parse_args()
    res = Results(f"UI benchmarks ({machine_summary()})")
    with temp_dir() as work:
        t0 = time.perf_counter()
        store, big, child, flat = build(work, args.files, args.per_dir, args.flat_files)
        print(f"# built a {args.files}-file version in {time.perf_counter() - t0:.1f} s", file=sys.stderr)
        env = {**os.environ, "XDG_DATA_HOME": str(work / "data")}
        proc = subprocess.Popen([sys.executable, "-m", "fsmount.cli", "ui", "--store", store, "--cache-dir",
                                 str(work / "cache-ui"), "--port", "0"], stdout=subprocess.PIPE, text=True,
                                stdin=subprocess.DEVNULL, env=env)
        try:
            assert proc.stdout is not None
            url = proc.stdout.readline().rsplit(" on ", 1)[1].strip().rstrip("/")
            half = args.files // 2
            pages = {
                "version": f"/v/{big}",
                "version.late_page": f"/v/{big}?kind=added&start={half}",
                "version.child": f"/v/{child}",
                "files.root": f"/v/{big}/files",
                "files.dir": f"/v/{big}/files/d00000",
                "files.after": f"/v/{big}/files/d00000?after=f0000500.bin",
                "files.flat": f"/v/{flat}/files/flat",
                "files.flat.last_page": f"/v/{flat}/files/flat?start={max(0, args.flat_files - 500)}",
                "files.flat.after": f"/v/{flat}/files/flat?after=f{args.flat_files // 2:07d}.bin",
                "diff": f"/diff?a={big}&b={child}&kind=modified",
                "datasets": "/",
            }
            # http.client, one connection per load: a kept-alive httpx connection adds ~40 ms to every
            # answer (delayed ACK against its request writes), and a new httpx client costs ~50 ms itself.
            for name, path in pages.items():
                t = time.perf_counter()
                status = load(url, path)
                cold = time.perf_counter() - t
                assert status == 200, (path, status)
                times = []
                for _ in range(args.repeat):
                    t = time.perf_counter()
                    assert load(url, path) == 200
                    times.append(time.perf_counter() - t)
                res.add(f"ui.{name}", statistics.median(times) * 1000, "ms",
                        f"warm median of {args.repeat}, worst {max(times) * 1000:.0f} ms; "
                        f"first (cold) {cold * 1000:.0f} ms")
        finally:
            proc.terminate()
            proc.wait(15)
    res.add("ui.files", args.files, "files", f"{args.files // args.per_dir} folders of {args.per_dir}")
    res.add("ui.flat_files", args.flat_files, "files", "one folder (files.flat*)")
    res.print_all()


if __name__ == "__main__":
    main()
