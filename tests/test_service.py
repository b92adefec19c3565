"""The service side end to end: systemd's notify protocol, fstab through mount(8), logs, metrics."""

from __future__ import annotations

import json
import os
import select
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.fs.mountpoint import is_mounted
from tests.fs_helpers import cli_mount, force_unmount, wait_until
from tests.helpers import FSMOUNT, run_cli, write_tree

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]


@pytest.fixture
def dataset(store_url: str, tmp_path: Path) -> tuple[str, str]:
    src = write_tree(tmp_path / "src", {"a.txt": "alpha\n", "d/b.bin": os.urandom(300_000)})
    ds = Dataset.create("svc", "ops", store=store_url)
    ds.add_files(src)
    ds.finalize()
    return ds.id, store_url


def _conf(tmp_path: Path, **values: str) -> Path:
    conf = tmp_path / "test.conf"
    conf.write_text("".join(f"{k} = {v}\n" for k, v in values.items()))
    return conf


def _receive(sock: socket.socket, proc: subprocess.Popen[bytes], timeout: float = 120) -> str:
    """The next notify datagram; fails at once (with the daemon's stderr) if the daemon exits first."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        ready, _, _ = select.select([sock], [], [], 0.2)
        if ready:
            return sock.recv(4096).decode()
        if proc.poll() is not None:
            ready, _, _ = select.select([sock], [], [], 0)
            if ready:
                return sock.recv(4096).decode()
            err = proc.stderr.read().decode() if proc.stderr else ""
            raise AssertionError(f"daemon exited ({proc.returncode}) without notifying: {err}")
    raise AssertionError("no notify message within the deadline")


def test_notify_protocol_end_to_end(dataset: tuple[str, str], tmp_path: Path) -> None:
    ref, store = dataset
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    conf = _conf(tmp_path, dataset=ref, mountpoint=str(mnt), store=store, cache_dir=str(tmp_path / "cache"))
    sock_path = str(tmp_path / "notify.sock")
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
    sock.bind(sock_path)
    sock.settimeout(60)
    env = {**os.environ, "NOTIFY_SOCKET": sock_path}
    # The unit's ExecStart, with this checkout's fsmount.
    proc = subprocess.Popen(
        [*FSMOUNT, "mount", "--config", str(conf), "--foreground"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    try:
        first = _receive(sock, proc)
        assert "READY=1" in first.splitlines()
        # READY=1 was sent only once the mount answers.
        assert is_mounted(mnt)
        assert (mnt / "a.txt").read_text() == "alpha\n"
        # Started by "systemd" or by hand, it is the same daemon to `fsmount status`.
        mounts = json.loads(run_cli("status", "--json").stdout)["mounts"]
        assert [(m["version"], m["pid"]) for m in mounts if m["mountpoint"] == str(mnt)] == [(ref, proc.pid)]
        proc.send_signal(signal.SIGTERM)
        messages = _receive(sock, proc)
        assert "STOPPING=1" in messages.splitlines()
        assert proc.wait(30) == 0
        assert not is_mounted(mnt)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
        force_unmount(mnt)
        sock.close()


def test_bad_conf_exits_78_with_one_line(tmp_path: Path, dataset: tuple[str, str]) -> None:
    ref, store = dataset
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    bad = _conf(tmp_path, dataset=ref, mountpoint=str(mnt), colour="blue")
    proc = run_cli("mount", "--config", str(bad), "--foreground", check=False)
    assert proc.returncode == 78 and proc.stderr.strip().endswith("unknown key 'colour'")
    missing = _conf(tmp_path, dataset="ops/nothing-here", mountpoint=str(mnt), store=store)
    proc = run_cli("mount", "--config", str(missing), "--foreground", check=False)
    assert proc.returncode == 78 and len(proc.stderr.strip().splitlines()) == 1
    assert not is_mounted(mnt)


@pytest.fixture
def fsmount_on_system_path() -> Iterator[None]:
    """mount(8) resets PATH for its helpers; mount.fuse3 then runs `fsmount` from /usr/local/bin.

    `make install` makes that link; here it points at this checkout for the test's duration.
    """
    link = Path("/usr/local/bin/fsmount")
    ours = Path(sys.executable).with_name("fsmount")
    if link.is_symlink() and link.resolve() == ours.resolve():
        yield
        return
    if link.exists() or link.is_symlink():
        pytest.skip(f"{link} belongs to another installation")
    if not os.access(link.parent, os.W_OK):
        pytest.skip(f"{link.parent} is not writable")
    link.symlink_to(ours)
    try:
        yield
    finally:
        link.unlink()


@pytest.mark.usefixtures("fsmount_on_system_path")
def test_fstab_mount_and_umount_through_mount8(dataset: tuple[str, str], tmp_path: Path) -> None:
    if shutil.which("mount") is None or not Path("/sbin/mount.fuse3").exists():
        pytest.skip("mount(8) or mount.fuse3 missing")
    ref, store = dataset
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(
        f"{ref}  {mnt}  fuse.fsmount  ro,_netdev,nofail,store={store},"
        f"cache_dir={tmp_path / 'cache'},cache_size=1GiB  0 0\n"
    )
    try:
        proc = subprocess.run(
            ["mount", "-T", str(fstab), str(mnt)],
            capture_output=True,
            text=True,
            timeout=120,
            stdin=subprocess.DEVNULL,
        )
        assert proc.returncode == 0, proc.stderr
        assert is_mounted(mnt)
        assert (mnt / "a.txt").read_text() == "alpha\n"
        assert len((mnt / "d" / "b.bin").read_bytes()) == 300_000
        mounts = json.loads(run_cli("status", "--json").stdout)["mounts"]
        assert [m["version"] for m in mounts if m["mountpoint"] == str(mnt)] == [ref]
        assert subprocess.run(["umount", str(mnt)], capture_output=True, timeout=60).returncode == 0
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


@pytest.mark.usefixtures("fsmount_on_system_path")
def test_fstab_unknown_option_is_refused(dataset: tuple[str, str], tmp_path: Path) -> None:
    ref, _ = dataset
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    fstab = tmp_path / "fstab"
    fstab.write_text(f"{ref}  {mnt}  fuse.fsmount  ro,warp_speed=9  0 0\n")
    proc = subprocess.run(["mount", "-T", str(fstab), str(mnt)], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "warp_speed" in proc.stderr
    assert not is_mounted(mnt)


@pytest.mark.s3
def test_debug_log_holds_no_secret(
    s3_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    secret = "SuperSecretValue0123456789abcdefXYZ"
    creds = tmp_path / "creds"
    creds.write_text(f"AWS_ACCESS_KEY_ID=AKIATESTKEY\nAWS_SECRET_ACCESS_KEY={secret}\n")
    creds.chmod(0o600)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", secret)  # moto accepts any key; the data is written with it
    src = write_tree(tmp_path / "src", {"x.txt": "x" * 1000})
    ds = Dataset.create("sec", "ops", store=s3_store_url)
    ds.add_files(src)
    ds.finalize()
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "not-this-one")
    log_file = tmp_path / "daemon.log"
    with cli_mount(
        ds.id,
        tmp_path / "mnt",
        s3_store_url,
        tmp_path / "cache",
        "--log-level",
        "debug",
        "--log-file",
        str(log_file),
        "--credentials-file",
        str(creds),
    ) as mnt:
        assert (mnt / "x.txt").read_text() == "x" * 1000
    text = log_file.read_text()
    # botocore's debug log prints every request's headers: they were logged, and scrubbed.
    assert "'Authorization': b'***'" in text
    for needle in (secret, secret[:16], "Signature=", "X-Amz-Signature"):
        if needle in text:
            line = next(ln for ln in text.splitlines() if needle in ln)
            raise AssertionError(f"{needle!r} leaked into the log: {line[:200]}")


def test_metrics_port_and_file(dataset: tuple[str, str], tmp_path: Path) -> None:
    ref, store = dataset
    from tests.conftest import _free_port

    port = _free_port()
    prom = tmp_path / "fsmount.prom"
    with cli_mount(
        ref,
        tmp_path / "mnt",
        store,
        tmp_path / "cache",
        "--metrics-port",
        str(port),
        "--metrics-file",
        str(prom),
    ) as mnt:
        assert (mnt / "d" / "b.bin").stat().st_size == 300_000
        (mnt / "d" / "b.bin").read_bytes()
        body = urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10).read().decode()
        served = [ln for ln in body.splitlines() if ln.startswith("fsmount_bytes_served_total{")]
        assert served and float(served[0].rsplit(" ", 1)[1]) >= 300_000
        assert f'version="{ref}"' in served[0]
        wait_until(prom.exists, what="the metrics file")
        assert "# TYPE fsmount_reads_total counter" in prom.read_text()
