"""Shared helpers for the benchmarks: a moto S3 server, test data, timers, result output.

Every benchmark measures fsmount and its baseline side by side in one run, against the
same server, and prints one JSON line per figure ({"name", "value", "unit"}) followed
by a human-readable table. Nothing here is a test; nothing here touches the project's code.
"""

from __future__ import annotations

import contextlib
import json
import os
import resource
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

VENV_BIN = Path(sys.executable).parent
MOTO = VENV_BIN / "moto_server"
FSMOUNT = VENV_BIN / "fsmount"

MiB = 2**20
GiB = 2**30


# -- processes ------------------------------------------------------------------------------


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def proc_cpu_seconds(pid: int) -> float:
    """utime + stime of a live process (Linux /proc), in seconds; 0.0 if it is gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    ticks = os.sysconf("SC_CLK_TCK")
    return (int(fields[11]) + int(fields[12])) / ticks  # fields 14, 15 of stat(5)


def children_cpu_seconds() -> float:
    """CPU time of reaped children so far (user + system)."""
    ru = resource.getrusage(resource.RUSAGE_CHILDREN)
    return ru.ru_utime + ru.ru_stime


def self_cpu_seconds() -> float:
    ru = resource.getrusage(resource.RUSAGE_SELF)
    return ru.ru_utime + ru.ru_stime


class MotoServer:
    """moto_server on 127.0.0.1 on a free port, run in its own temp dir; stopped by PID.

    Its request log (werkzeug, one line per request) goes to `log_path`, so a benchmark
    can count the requests a phase made (`count_requests`).
    """

    def __init__(self, workdir: Path) -> None:
        self.workdir = workdir
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = workdir / "moto.log"
        self.pid: int | None = None
        self._proc: subprocess.Popen[bytes] | None = None

    def start(self, timeout: float = 30.0) -> None:
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(
                [str(MOTO), "-H", "127.0.0.1", "-p", str(self.port)],
                stdout=log, stderr=subprocess.STDOUT, cwd=self.workdir,
                start_new_session=True,  # a Ctrl-C to the benchmark does not hit the server first
            )
        self.pid = self._proc.pid
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return
            except OSError:
                if self._proc.poll() is not None:
                    raise RuntimeError(f"moto_server exited; see {self.log_path}") from None
                time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"moto_server did not listen within {timeout:.0f} s")

    def cpu_seconds(self) -> float:
        return proc_cpu_seconds(self.pid) if self.pid else 0.0

    def log_offset(self) -> int:
        try:
            return self.log_path.stat().st_size
        except FileNotFoundError:
            return 0

    def count_requests(self, since: int, method: str | None = None, contains: str = "") -> int:
        """Requests logged after byte offset `since` (from log_offset()) matching method and text."""
        with open(self.log_path, "rb") as f:
            f.seek(since)
            lines = f.read().decode("utf-8", "replace").splitlines()
        n = 0
        for line in lines:
            if '"' not in line:
                continue
            request = line.split('"', 2)[1]  # e.g. GET /bucket/key HTTP/1.1
            parts = request.split()
            if len(parts) < 2:
                continue
            if method and parts[0] != method:
                continue
            if contains and contains not in parts[1]:
                continue
            n += 1
        return n

    def stop(self) -> None:
        """Terminate the server by its PID (SIGTERM, then SIGKILL after 10 s)."""
        if self._proc is None or self.pid is None:
            return
        if self._proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGTERM)
            try:
                self._proc.wait(10)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(self.pid, signal.SIGKILL)
                self._proc.wait()
        self._proc = None
        self.pid = None

    def __enter__(self) -> MotoServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def s3_client(endpoint_url: str, max_pool: int = 64):  # type: ignore[no-untyped-def]
    """A plain boto3 S3 client for the baseline (same credentials fsmount gets)."""
    import boto3
    from botocore.config import Config

    return boto3.session.Session().client(
        "s3", endpoint_url=endpoint_url, region_name="us-east-1",
        aws_access_key_id="testing", aws_secret_access_key="testing",
        config=Config(max_pool_connections=max_pool),
    )


def s3_env(endpoint_url: str) -> dict[str, str]:
    """Environment for a child process talking to the benchmark's moto server."""
    return {
        "AWS_ENDPOINT_URL": endpoint_url,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


@contextlib.contextmanager
def temp_dir(prefix: str = "fsmount-bench-") -> Iterator[Path]:
    """A temp folder removed at the end, whatever happens (read-only copies included)."""
    path = Path(tempfile.mkdtemp(prefix=prefix))
    try:
        yield path
    finally:
        rmtree_force(path)


def rmtree_force(path: Path) -> None:
    def onerror(func, p, _exc):  # type: ignore[no-untyped-def]
        with contextlib.suppress(OSError):
            os.chmod(os.path.dirname(p), 0o700)
            os.chmod(p, 0o700)
            func(p)

    shutil.rmtree(path, onerror=onerror)


@dataclass
class RunResult:
    seconds: float
    cpu_seconds: float  # CPU time of the child itself
    stdout: str
    stderr: str


def run_cli(args: Sequence[str], env: dict[str, str], *, profile: Path | None = None,
            profiler: str = "py-spy") -> RunResult:
    """Run the fsmount CLI (optionally under a sampling profiler) and time it; raise on failure."""
    cmd = [str(FSMOUNT), *args]
    if profile is not None:
        if profiler == "py-spy":
            # raw = collapsed stacks ("frame;frame;... count"), greppable; active samples only
            cmd = [str(VENV_BIN / "py-spy"), "record", "--rate", "200", "--format", "raw",
                   "-o", str(profile), "--", *cmd]
        else:
            cmd = [str(VENV_BIN / "pyinstrument"), "-r", "text", "-o", str(profile), *cmd]
    full_env = {**os.environ, **env}
    cpu0 = children_cpu_seconds()
    t0 = time.perf_counter()
    proc = subprocess.run(cmd, env=full_env, capture_output=True, text=True, check=False)
    elapsed = time.perf_counter() - t0
    cpu = children_cpu_seconds() - cpu0
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({proc.returncode}):\n{proc.stderr[-4000:]}")
    return RunResult(elapsed, cpu, proc.stdout, proc.stderr)


# -- test data ---------------------------------------------------------------------------------


def write_random_file(path: Path, size: int, chunk: int = 16 * MiB) -> None:
    """`size` incompressible bytes (os.urandom), written in chunks."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        left = size
        while left > 0:
            n = min(chunk, left)
            f.write(os.urandom(n))
            left -= n


def write_small_files(folder: Path, count: int, size: int) -> None:
    """`count` distinct random files of `size` bytes: folder/00000.bin ..."""
    folder.mkdir(parents=True, exist_ok=True)
    width = max(5, len(str(count)))
    for i in range(count):
        with open(folder / f"{i:0{width}d}.bin", "wb") as f:
            f.write(os.urandom(size))


def tree_bytes(folder: Path) -> tuple[int, int]:
    """(files, bytes) of the regular files under `folder`."""
    files = total = 0
    for dirpath, _, names in os.walk(folder):
        for n in names:
            st = os.lstat(os.path.join(dirpath, n))
            files += 1
            total += st.st_size
    return files, total


def drop_page_cache() -> bool:
    """Best effort: drop the kernel page cache (needs root); True if done."""
    try:
        os.sync()
        Path("/proc/sys/vm/drop_caches").write_text("3\n")
        return True
    except OSError:
        return False


# -- timing and results ---------------------------------------------------------------------------


class Timer:
    """with Timer() as t: ...; t.seconds"""

    def __enter__(self) -> Timer:
        self._t0 = time.perf_counter()
        self.seconds = 0.0
        return self

    def __exit__(self, *exc: object) -> None:
        self.seconds = time.perf_counter() - self._t0


@dataclass
class Results:
    """Figures of one benchmark run: JSON lines for machines, a table for people."""

    title: str
    rows: list[dict[str, object]] = field(default_factory=list)

    def add(self, name: str, value: float | int, unit: str, note: str = "") -> None:
        v = round(value, 3) if isinstance(value, float) else value
        row: dict[str, object] = {"name": name, "value": v, "unit": unit}
        if note:
            row["note"] = note
        self.rows.append(row)

    def print_json_lines(self, file=sys.stdout) -> None:  # type: ignore[no-untyped-def]
        for r in self.rows:
            print(json.dumps({"name": r["name"], "value": r["value"], "unit": r["unit"]}), file=file)

    def table(self) -> str:
        head = ("name", "value", "unit", "note")
        cells = [(str(r["name"]), _fmt(r["value"]), str(r["unit"]), str(r.get("note", "")))
                 for r in self.rows]
        widths = [max(len(h), *(len(c[i]) for c in cells)) if cells else len(h) for i, h in enumerate(head)]
        out = [f"{self.title}", ""]
        out.append("| " + " | ".join(h.ljust(w) for h, w in zip(head, widths, strict=True)) + " |")
        out.append("|" + "|".join("-" * (w + 2) for w in widths) + "|")
        for c in cells:
            out.append("| " + " | ".join(
                (v.rjust(w) if i == 1 else v.ljust(w)) for i, (v, w) in enumerate(zip(c, widths, strict=True))
            ) + " |")
        return "\n".join(out)

    def print_all(self) -> None:
        self.print_json_lines()
        print()
        print(self.table())


def _fmt(v: object) -> str:
    if isinstance(v, float):
        return f"{v:,.2f}" if abs(v) < 1000 else f"{v:,.0f}"
    if isinstance(v, int):
        return f"{v:,}"
    return str(v)


def machine_summary() -> str:
    """'2 cores, 23 GiB RAM, Python 3.11.x, Linux x.y' for the report's intro."""
    import platform

    try:
        mem = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / GiB
    except (ValueError, OSError):
        mem = 0.0
    return (f"{os.cpu_count()} cores, {mem:.0f} GiB RAM, Python {platform.python_version()},"
            f" {platform.system()} {platform.release()}")
