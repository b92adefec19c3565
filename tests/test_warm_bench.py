"""bench/bench_epoch.py in its smallest mode runs to the end and prints its figures (no timing asserted)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent


def test_bench_epoch_smallest_run(tmp_path: Path, require_fuse: None) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_epoch.py"), "--files", "40", "--dirs", "4",
         "--threads", "4", "--skip", "rclone,s3fs,torch"],
        capture_output=True, text=True, env=env, timeout=600, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = {r["name"]: r for r in lines}
    for name in ("epoch.shards", "epoch.boto3", "epoch.cold.fsmount", "epoch.cold.gets", "warm.command",
                 "epoch.warm.fsmount", "epoch.warm.local", "ttfb.ratio"):
        assert name in rows, name
    assert rows["epoch.objects"]["value"] >= 40  # one object per file before packing, fewer after
    assert rows["epoch.warm.gets"]["value"] == 0  # after `fsmount warm`, an epoch fetches nothing
    assert str(tmp_path) not in Path("/proc/mounts").read_text()  # no mount left behind


def test_bench_fuse_floor_smallest_run(tmp_path: Path, require_fuse: None) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path)}
    proc = subprocess.run(
        [sys.executable, str(ROOT / "bench" / "bench_fuse_floor.py"), "--files", "40", "--dirs", "4",
         "--rounds", "1"],
        capture_output=True, text=True, env=env, timeout=300, stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr[-3000:]
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    rows = {r["name"]: r for r in lines}
    for name in ("floor.paths", "local.paths", "floor.paths.ratio", "floor.listed", "floor.listed.ratio",
                 "floor.paths.prefill", "floor.paths.prefill.ratio", "floor.paths.prefill.quick",
                 "floor.paths.prefill.quick.ratio"):
        assert rows[name]["value"] > 0, name
    assert str(tmp_path) not in Path("/proc/mounts").read_text()  # no mount left behind
