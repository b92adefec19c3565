"""`make bench`: every benchmark in one go, each fsmount figure beside its baseline, at default sizes.

Runs the bench scripts one after another (they share the machine, so never in parallel) and
collects their JSON lines ({"name", "value", "unit"}) into bench/results/all-<time>.jsonl.
`--quick` passes small sizes for a smoke run; any other argument goes to every script's argv
only through the per-script options below.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
QUICK = {
    "bench_cache.py": ["--objects", "20000"],
    "bench_dataset.py": ["--size-gib", "0.25", "--small-files", "1000"],
    "bench_epoch.py": ["--quick"],
    "bench_mount.py": ["--quick"],
    "bench_overlay.py": ["--size-gib", "0.25", "--small-files", "1000", "--tar-files", "2000"],
    "bench_ui.py": ["--files", "100000", "--flat-files", "20000", "--repeat", "5"],
}


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--quick", action="store_true", help="small sizes: a smoke run in a few minutes")
    ap.add_argument("--only", default="", help="comma list of scripts (e.g. bench_mount.py)")
    args = ap.parse_args(argv)
    scripts = sorted(QUICK)
    if args.only:
        scripts = [s for s in scripts if s in args.only.split(",")]
    out_dir = HERE / "results"
    out_dir.mkdir(exist_ok=True)
    out = out_dir / f"all-{time.strftime('%Y%m%d-%H%M%S')}.jsonl"
    failed = []
    with out.open("w") as sink:
        for script in scripts:
            cmd = [sys.executable, str(HERE / script), *(QUICK[script] if args.quick else [])]
            print(f"== {' '.join(cmd[1:])}", flush=True)
            proc = subprocess.run(cmd, capture_output=True, text=True)
            sys.stdout.write(proc.stdout)
            sys.stderr.write(proc.stderr)
            for line in proc.stdout.splitlines():
                if line.startswith("{"):
                    try:
                        row = json.loads(line)
                    except json.JSONDecodeError:
                        continue
                    sink.write(json.dumps({"script": script, **row}) + "\n")
            if proc.returncode != 0:
                failed.append(script)
    print(f"results: {out}")
    if failed:
        print(f"failed: {', '.join(failed)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
