"""The floor under every warm-epoch figure: the cheapest possible pyfuse3 file system next to the
local folder, in bench_epoch's shape (16 threads, shuffled, whole small files, page cache dropped).

    .venv/bin/python bench/bench_fuse_floor.py                    # 20,000 files of 52 KiB in 100 folders
    .venv/bin/python bench/bench_fuse_floor.py --files 2000 --dirs 20

The "floor" file system answers LOOKUP, GETATTR, OPEN, READ and RELEASE from memory with nothing
else to do (no tree, no cache, no hash): what pyfuse3 3.5 itself costs per file. Its "prefill"
variant pushes each file's bytes into the kernel's page cache at OPEN (notify_store), as fsmount
does for small files, so no READ is sent; its "quick" variant also runs fsmount's request loop
(fsmount/fs/fuse_loop.py: no scheduler pass for a request already waiting). fsmount's warm
epoch cannot be faster than it, so its ratio to the local folder bounds fsmount's. Each epoch
runs twice: with paths known (one LOOKUP per file, as bench_epoch) and after an `os.walk` (as
ImageFolder does: READDIRPLUS fills the kernel's dentries, no LOOKUP). Prints JSON lines and a table.
"""

from __future__ import annotations

import argparse
import os
import random
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.common import Results, drop_page_cache, machine_summary, temp_dir

SIZE = 52 * 1024

FLOOR_FS = r'''
import errno, os, stat, sys
import pyfuse3, trio
mnt, n, dirs, size = sys.argv[1], int(sys.argv[2]), int(sys.argv[3]), int(sys.argv[4])
notify = sys.argv[5] == "1"
if sys.argv[6] == "1":  # fsmount's request loop (fsmount/fs/fuse_loop.py) instead of pyfuse3's own
    sys.path.insert(0, sys.argv[7])
    from fsmount.fs import fuse_loop
    fuse_loop.install(16)
data = os.urandom(size)
names = {f"d{j:03d}".encode(): 2 + j for j in range(dirs)}
files = {(2 + i % dirs, f"f{i:06d}".encode()): 1000 + i for i in range(n)}
children = {}
for (d, name), ino in files.items():
    children.setdefault(d, []).append((name, ino))

class Floor(pyfuse3.Operations):
    def _attr(self, ino):
        a = pyfuse3.EntryAttributes()
        a.st_ino, a.st_nlink = ino, 1
        a.st_mode, a.st_size = (stat.S_IFDIR | 0o755, 0) if ino < 1000 else (stat.S_IFREG | 0o644, size)
        a.entry_timeout = a.attr_timeout = 3600
        return a
    async def lookup(self, parent, name, ctx=None):
        ino = names.get(name) if parent == pyfuse3.ROOT_INODE else files.get((parent, name))
        if ino is None:
            raise pyfuse3.FUSEError(errno.ENOENT)
        return self._attr(ino)
    async def getattr(self, ino, ctx=None):
        return self._attr(ino)
    async def opendir(self, ino, ctx):
        return ino
    async def readdir(self, fh, start, token):
        items = sorted(names.items()) if fh == pyfuse3.ROOT_INODE else children.get(fh, [])
        for i, (name, ino) in enumerate(items[start:], start):
            if not pyfuse3.readdir_reply(token, name, self._attr(ino), i + 1):
                break
    async def releasedir(self, fh):
        pass
    async def open(self, ino, flags, ctx):
        if notify:  # as fsmount's prefill: the bytes into the page cache now, no READ follows
            pyfuse3.notify_store(ino, 0, data)
        return pyfuse3.FileInfo(fh=ino, keep_cache=True)
    async def read(self, fh, off, n):
        return memoryview(data)[off:off + n]
    async def release(self, fh):
        pass
    async def flush(self, fh):
        raise pyfuse3.FUSEError(errno.ENOSYS)

opts = set(pyfuse3.default_options) | {"fsname=floor", "ro"}
pyfuse3.init(Floor(), mnt, opts)
os.write(1, b"ready\n")
try:
    trio.run(pyfuse3.main)
finally:
    pyfuse3.close(unmount=True)
'''


def epoch(root: Path, rel: list[str], walk: bool, threads: int = 16) -> float:
    def one(r: str) -> int:
        with open(root / r, "rb") as f:
            return len(f.read())

    drop_page_cache()
    t = time.perf_counter()
    if walk:
        sum(len(fs) for _, _, fs in os.walk(root))
    with ThreadPoolExecutor(threads) as pool:
        got = sum(pool.map(one, rel))
    assert got == SIZE * len(rel)
    return len(rel) / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--dirs", type=int, default=100)
    ap.add_argument("--rounds", type=int, default=2, help="alternating floor/local rounds (best kept)")
    args = ap.parse_args()
    res = Results("pyfuse3's floor (issue 10, warm epochs)")
    rel = [f"d{i % args.dirs:03d}/f{i:06d}" for i in range(args.files)]
    random.Random(1).shuffle(rel)
    print(f"# {args.files} files of {SIZE // 1024} KiB in {args.dirs} folders; {machine_summary()}",
          file=sys.stderr)
    with temp_dir() as work:
        local = work / "local"
        blob = os.urandom(SIZE)
        for r in rel:
            (local / r).parent.mkdir(parents=True, exist_ok=True)
            (local / r).write_bytes(blob)
        best: dict[str, float] = {}
        for _ in range(args.rounds):
            for walk, notify, quick in ((False, False, False), (True, False, False), (False, True, False),
                                        (False, True, True)):
                kind = ("listed" if walk else "paths") + (".prefill" if notify else "")
                kind += ".quick" if quick else ""
                mnt = work / "mnt"
                mnt.mkdir(exist_ok=True)
                argv = [sys.executable, "-c", FLOOR_FS, str(mnt), str(args.files), str(args.dirs), str(SIZE),
                        str(int(notify)), str(int(quick)), str(Path(__file__).resolve().parents[1])]
                fs = subprocess.Popen(argv, stdout=subprocess.PIPE)
                try:
                    assert fs.stdout is not None and fs.stdout.readline() == b"ready\n"
                    while not os.path.ismount(mnt):
                        time.sleep(0.01)
                    rate = epoch(mnt, rel, walk)
                finally:
                    subprocess.run(["fusermount3", "-u", str(mnt)], check=False)
                    fs.wait(30)
                best[f"floor.{kind}"] = max(best.get(f"floor.{kind}", 0.0), rate)
                best[f"local.{kind}"] = max(best.get(f"local.{kind}", 0.0), epoch(local, rel, walk))
    for kind, what in (("paths", "paths known: LOOKUP, OPEN, READ, RELEASE per file"),
                       ("listed", "after os.walk: OPEN, READ, RELEASE per file"),
                       ("paths.prefill", "paths known, bytes pushed at OPEN: LOOKUP, OPEN, RELEASE"),
                       ("paths.prefill.quick", "the same through fsmount's request loop (fs/fuse_loop.py)")):
        res.add(f"floor.{kind}", best[f"floor.{kind}"], "files/s", f"do-nothing pyfuse3 FS, {what}")
        res.add(f"local.{kind}", best[f"local.{kind}"], "files/s", "the local folder, page cache dropped")
        res.add(f"floor.{kind}.ratio", best[f"floor.{kind}"] / best[f"local.{kind}"], "x",
                "the most a pyfuse3 file system reaches here this way (issue 10's warm target: 0.7x)")
    res.print_all()


if __name__ == "__main__":
    main()
