"""Reopening the local cache: a full cache must open as fast as an empty one (no walk at start).

Side by side in one run: open an empty ContentCache, then one holding N objects, in fresh
processes (so nothing is warm in this interpreter). Reports both times and their ratio.

    .venv/bin/python bench/bench_cache.py [--objects 200000]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import Results, temp_dir

OPEN = """
import sys, time
t0 = time.perf_counter()
from fsmount.cache.local_cache import ContentCache
t1 = time.perf_counter()
c = ContentCache(sys.argv[1], "100GiB")
n = len(c)
x = c.get(bytes(32))  # one lookup, as a mount's first read would do
t2 = time.perf_counter()
print(t2 - t1, n)
"""


def open_time(folder: Path) -> tuple[float, int]:
    best = None
    for _ in range(3):
        out = subprocess.run([sys.executable, "-c", OPEN, str(folder)], capture_output=True, text=True,
                             check=True).stdout.split()
        t, n = float(out[0]), int(out[1])
        best = t if best is None else min(best, t)
    assert best is not None
    return best, n


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--objects", type=int, default=200_000)
    args = ap.parse_args()
    from fsmount.cache.local_cache import ContentCache
    from fsmount.format.hashing import digest

    res = Results(f"Cache reopen: empty vs {args.objects:,} objects")
    with temp_dir() as tmp:
        empty, full = tmp / "empty", tmp / "full"
        ContentCache(empty, "1GiB").close()
        cache = ContentCache(full, "100GiB")
        t0 = time.perf_counter()
        for i in range(args.objects):
            data = i.to_bytes(8, "little") * 128  # 1 KiB, distinct
            cache.put(digest(data), data)
        fill = time.perf_counter() - t0
        cache.close()
        size = sum(f.stat().st_size for f in full.rglob("*") if f.is_file())
        t_empty, _ = open_time(empty)
        t_full, n = open_time(full)
        res.add("fill", args.objects / fill, "objects/s", f"{size / 2**20:.0f} MiB on disk")
        res.add("open empty cache", t_empty * 1000, "ms")
        res.add("open full cache", t_full * 1000, "ms", f"{n:,} objects")
        res.add("full/empty", t_full / t_empty, "x", "target: ~1 (no walk at start)")
    res.print_all()


if __name__ == "__main__":
    os.environ.setdefault("PYTHONDONTWRITEBYTECODE", "1")
    main()
