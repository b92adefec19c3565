"""Service configuration: conf files, fstab options, credentials files, systemd unit files, notify."""

from __future__ import annotations

import os
import re
import shutil
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from fsmount.service.config import EX_CONFIG, ConfigError, parse_conf, parse_fstab_options
from fsmount.service.credentials import load_credentials
from fsmount.service.notify import notify

UNITS = Path(__file__).resolve().parent.parent / "systemd"


def test_conf_maps_one_to_one_to_cli_options(tmp_path: Path) -> None:
    conf = tmp_path / "pets.conf"
    conf.write_text(
        "# a comment\ndataset = cv/pets@1.2.0\nmountpoint = /mnt/data\nstore = s3://b/p\n"
        "cache-size = 50GiB\nallow_other = yes\ntimeout = 5\noptions = max_read=131072\n"
    )
    s = parse_conf(conf)
    assert s.cli_args() == [
        "cv/pets@1.2.0",
        "/mnt/data",
        "--store",
        "s3://b/p",
        "--cache-size",
        "50GiB",
        "--timeout",
        "5.0",
        "--allow-other",
        "-o",
        "max_read=131072",
    ]


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("mountpoint = /m\n", "missing key 'dataset'"),
        ("dataset = a/b\n", "missing key 'mountpoint'"),
        ("dataset = a/b\nmountpoint = /m\ncolour = blue\n", "unknown key 'colour'"),
        ("dataset = a/b\nmountpoint = /m\nallow_other = maybe\n", "expected yes or no"),
        ("dataset = a/b\nmountpoint /m\n", "expected 'key = value'"),
    ],
)
def test_bad_conf_is_refused_by_name(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "x.conf"
    conf.write_text(text)
    with pytest.raises(ConfigError, match=message) as info:
        parse_conf(conf)
    assert info.value.exit_code == EX_CONFIG


def test_fstab_options() -> None:
    s = parse_fstab_options(
        "cv/pets@1.2.0",
        "/mnt/data",
        "ro,_netdev,allow_other,cache_size=50GiB,nofail,x-systemd.automount,dev,suid",
    )
    assert (s.ref, s.mountpoint, s.allow_other, s.cache_size, s.write) == (
        "cv/pets@1.2.0",
        "/mnt/data",
        True,
        "50GiB",
        False,
    )
    assert parse_fstab_options("r", "/m", "rw,write,overlay=/o").write is True
    assert parse_fstab_options("r", "/m", "default_permissions").fuse_options == ["default_permissions"]
    with pytest.raises(ConfigError, match="unknown option"):
        parse_fstab_options("r", "/m", "ro,turbo")
    with pytest.raises(ConfigError, match="unknown key 'speed'"):
        parse_fstab_options("r", "/m", "speed=11")


def test_credentials_file(tmp_path: Path) -> None:
    f = tmp_path / "creds"
    f.write_text("# aws\nAWS_ACCESS_KEY_ID=AKIA1\nexport AWS_SECRET_ACCESS_KEY='s3cr3t'\n")
    os.chmod(f, 0o600)
    assert load_credentials(str(f)) == {"AWS_ACCESS_KEY_ID": "AKIA1", "AWS_SECRET_ACCESS_KEY": "s3cr3t"}
    f.write_text("garbage\n")
    with pytest.raises(ConfigError):
        load_credentials(str(f))


@pytest.mark.parametrize(
    "unit", sorted(p.name for p in UNITS.glob("*.service")) + sorted(p.name for p in UNITS.glob("*.mount"))
)
def test_units_pass_systemd_analyze_verify(unit: str, tmp_path: Path) -> None:
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        if os.environ.get("CI") == "true":
            pytest.fail("systemd-analyze is missing (the systemd package): make test installs it")
        pytest.skip("systemd-analyze not installed")
    text = (UNITS / unit).read_text()
    # verify checks that ExecStart's binary exists: point it at this checkout's fsmount.
    fsmount_bin = str(Path(sys.executable).with_name("fsmount"))
    text = text.replace("/usr/local/bin/fsmount", fsmount_bin)
    name = unit.replace("@.service", "@test.service")
    (tmp_path / name).write_text(text)
    proc = subprocess.run(
        [analyze, "verify", str(tmp_path / name)], capture_output=True, text=True, cwd=tmp_path
    )
    problems = [
        line
        for line in (proc.stdout + proc.stderr).splitlines()
        if name.split("@")[0] in line or "error" in line.lower()
    ]
    assert proc.returncode == 0 and not problems, proc.stdout + proc.stderr


def test_notify_sends_datagrams(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    path = str(tmp_path / "notify.sock")
    with socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM) as sock:
        sock.bind(path)
        monkeypatch.setenv("NOTIFY_SOCKET", path)
        assert notify("READY=1", "STATUS=mounted") is True
        assert sock.recv(4096) == b"READY=1\nSTATUS=mounted"
    monkeypatch.delenv("NOTIFY_SOCKET")
    assert notify("READY=1") is False


def test_prometheus_rendering_is_well_formed() -> None:
    from fsmount.service.metrics import render

    text = render(
        [
            {
                "mountpoint": '/mnt/"x"',
                "version": "v1",
                "counters": {"reads": 5, "open_files": 2, "held_bytes": 9, "store": {"objects_fetched": 3},
                             "last_error": "x"},
            }
        ]
    )
    lines = text.splitlines()
    assert 'fsmount_reads_total{mountpoint="/mnt/\\"x\\"",version="v1"} 5' in lines
    assert "# TYPE fsmount_open_files gauge" in lines
    assert "# TYPE fsmount_held_bytes gauge" in lines and not any("held_bytes_total" in ln for ln in lines)
    assert "# HELP fsmount_store_objects_fetched_total objects downloaded from the store" in lines
    assert not any("last_error" in line for line in lines)  # text values are not samples


def test_mount_fuse3_calling_convention_becomes_a_mount_command() -> None:
    from fsmount.cli.main import fstab_argv

    assert fstab_argv(["cv/pets@1.2.0", "/mnt/data", "-o", "ro,_netdev,allow_other,cache_size=50GiB"]) == [
        "mount", "cv/pets@1.2.0", "/mnt/data", "--cache-size", "50GiB", "--allow-other"]
    assert fstab_argv(["list", "--json"]) is None
    assert fstab_argv(["--store", "s3://b", "list"]) is None


def test_unknown_fstab_option_exits_78_with_one_line() -> None:
    from tests.helpers import run_cli

    proc = run_cli("cv/pets", "/mnt/nowhere", "-o", "ro,turbo", check=False)
    assert proc.returncode == EX_CONFIG
    assert proc.stderr.strip() == "fsmount: error: fstab option 'turbo': unknown option"


def test_cli_options_win_over_the_conf_and_the_rest_comes_from_it(tmp_path: Path) -> None:
    from fsmount.service.request import MountRequest

    conf = tmp_path / "w.conf"
    conf.write_text("dataset = cv/pets\nmountpoint = /mnt/w\nstore = s3://conf/store\nwrite = yes\n"
                    "overlay = /var/lib/o\noptions = max_read=131072\n")
    cli = MountRequest("", "", store="s3://cli/store", fuse_options=["default_permissions"])
    req = cli.filled_from(parse_conf(conf))
    assert (req.ref, req.mountpoint, req.store, req.write, req.overlay) == (
        "cv/pets", "/mnt/w", "s3://cli/store", True, "/var/lib/o")
    assert req.fuse_options == ["default_permissions", "max_read=131072"]
    assert "ro" not in req.fuse_option_set()  # a writable conf mounts read-write


def test_comments_after_values_and_every_example_line_uncommented(tmp_path: Path) -> None:
    """systemd/example.conf with every optional line uncommented parses, trailing comments and all."""
    text = (UNITS / "example.conf").read_text()
    lines = [line[2:] if re.match(r"# [a-z_]+ = ", line) else line for line in text.splitlines()]
    conf = tmp_path / "all.conf"
    conf.write_text("\n".join(lines) + "\n")
    uncommented = [ln for ln in lines if ln and not ln.startswith("#")]
    assert len(uncommented) >= 14  # the two required keys and every optional one
    s = parse_conf(conf)
    assert s.credentials_file == "/etc/fsmount/NAME.credentials"
    assert s.metrics_port == 9711 and s.timeout == 30.0
    assert s.fuse_options == ["max_read=1048576"]
    # A quoted value keeps a ' #' of its own; an unterminated quote is refused by line.
    conf.write_text("dataset = cv/pets\nmountpoint = '/mnt/a #1'   # the first\n")
    assert parse_conf(conf).mountpoint == "/mnt/a #1"
    conf.write_text("dataset = cv/pets\nmountpoint = '/mnt/a\n")
    with pytest.raises(ConfigError, match=r"all.conf:2: unterminated quote"):
        parse_conf(conf)


def test_readme_service_example_parses(tmp_path: Path) -> None:
    readme = (UNITS.parent / "README.md").read_text()
    start = readme.index("cat > /etc/fsmount/pets.conf <<EOF\n") + len("cat > /etc/fsmount/pets.conf <<EOF\n")
    body = readme[start:readme.index("    EOF", start)]
    conf = tmp_path / "pets.conf"
    conf.write_text("\n".join(line.strip() for line in body.splitlines()) + "\n")
    s = parse_conf(conf)
    assert s.credentials_file == "/etc/fsmount/pets.credentials" and s.mountpoint == "/mnt/pets"


def test_make_install_into_a_staging_root_says_what_it_did(tmp_path: Path) -> None:
    """`make install` without systemd as PID 1 installs, then says nothing was reloaded (no ignored error)."""
    if shutil.which("make") is None or not (UNITS.parent / ".venv/.installed").exists():
        pytest.skip("needs make and the installed checkout (make test installs both)")
    dirs = {k: tmp_path / k.lower() for k in ("BINDIR", "CONFDIR", "UNITDIR")}
    args = [f"{k}={v}" for k, v in dirs.items()] + [f"SYSTEMD_RUN={tmp_path / 'no-systemd'}"]
    proc = subprocess.run(["make", "-s", "install", *args], cwd=UNITS.parent, capture_output=True, text=True,
                          stdin=subprocess.DEVNULL, timeout=600)
    assert proc.returncode == 0, proc.stderr
    assert "Error" not in proc.stdout + proc.stderr and "systemd is not running here" in proc.stdout
    assert os.readlink(dirs["BINDIR"] / "fsmount") == str(UNITS.parent / ".venv/bin/fsmount")
    assert (dirs["UNITDIR"] / "fsmount@.service").read_bytes() == (UNITS / "fsmount@.service").read_bytes()
    assert (dirs["CONFDIR"] / "example.conf.sample").exists()


def test_fstab_names_several_warm_paths_by_repeating_the_option() -> None:
    """fstab's commas separate options, so `warm=a,b` cannot list two paths: `warm=a,warm=b` does."""
    s = parse_fstab_options("p/n", "/mnt/x", "ro,warm=train,warm=val/cats,allow_other")
    assert s.warm_paths == ["train", "val/cats"] and s.allow_other
    with pytest.raises(ConfigError, match="'val'"):
        parse_fstab_options("p/n", "/mnt/x", "warm=train,val")
