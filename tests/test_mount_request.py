"""MountRequest: one field table from which the CLI options, conf keys and fstab options derive; bad input
is refused with one line (exit 2 on the CLI, 78 from a conf file or fstab) and mounts nothing."""

from __future__ import annotations

import dataclasses
import socket
from pathlib import Path
from typing import Any

import pytest
from fsmount.cli.mount_commands import mount

from fsmount import Dataset
from fsmount.errors import UsageError
from fsmount.fs.mountpoint import is_mounted
from fsmount.service.config import EX_CONFIG, ConfigError, parse_conf, parse_fstab_options
from fsmount.service.request import OPTIONS, MountRequest, daemon_log_level
from tests.fs_helpers import cli_mount, force_unmount
from tests.helpers import run_cli, write_tree

# A text value for each kind of option, and what it means once parsed.
SAMPLES = {"text": ("s3://b/p", "s3://b/p"), "url": ("http://127.0.0.1:9", "http://127.0.0.1:9"),
           "path": ("/x/y", "/x/y"), "size": ("5GiB", "5GiB"), "level": ("debug", "debug"),
           "port": ("9711", 9711), "seconds": ("2.5", 2.5), "flag": ("yes", True),
           "list": ("max_read=131072", ["max_read=131072"])}


def _full_request() -> MountRequest:
    req = MountRequest("cv/pets@1.0.0", "/mnt/p")
    for opt in OPTIONS:
        setattr(req, opt.name, SAMPLES[opt.kind][1])
    return req


def test_every_option_reaches_all_three_front_ends(tmp_path: Path) -> None:
    want = _full_request()
    # The CLI: the daemon's own command line parses back into the same request.
    ctx = mount.make_context("mount", want.cli_args())
    params = dict(ctx.params)
    assert MountRequest.from_cli(params.pop("ref"), params.pop("mountpoint"), params) == want
    # A conf file with every key.
    conf = tmp_path / "all.conf"
    conf.write_text("dataset = cv/pets@1.0.0\nmountpoint = /mnt/p\n"
                    + "".join(f"{o.conf_key} = {SAMPLES[o.kind][0]}\n" for o in OPTIONS if o.conf_key))
    assert parse_conf(conf) == want
    # An fstab options field with every option ('=' kept off for flags, as fstab writes them).
    fstab = ",".join(o.conf_key if o.kind == "flag" else f"{o.conf_key}={SAMPLES[o.kind][0]}"
                     for o in OPTIONS if o.conf_key)
    assert parse_fstab_options("cv/pets@1.0.0", "/mnt/p", fstab) == want
    assert {p.name for p in mount.params} >= {o.name for o in OPTIONS}


def test_the_existing_spellings_are_kept() -> None:
    flags = {o.name: o.cli_flags for o in OPTIONS}
    assert flags["write"] == ("--write", "-w") and flags["fuse_options"] == ("-o",)
    assert {o.conf_key for o in OPTIONS} == {
        "store", "endpoint_url", "cache_dir", "cache_size", "overlay", "credentials_file", "log_level",
        "log_file", "metrics_file", "metrics_port", "timeout", "allow_other", "write", "options", "warm"}


def test_daemon_log_level_policy() -> None:
    assert daemon_log_level(None, "warning") == "info"  # the CLI's default: a daemon logs its events
    assert daemon_log_level(None, None) == "info"
    assert daemon_log_level(None, "debug") == "debug"
    assert daemon_log_level("error", "debug") == "error"


@pytest.mark.parametrize(("field", "value", "words"), [
    ("timeout", float("nan"), "--timeout must be a positive number"),
    ("timeout", float("inf"), "--timeout must be a positive number"),
    ("timeout", -1.0, "--timeout must be a positive number"),
    ("timeout", 0, "--timeout must be a positive number"),
    ("metrics_port", -1, "--metrics-port must be a port number"),
    ("metrics_port", 0, "--metrics-port must be a port number"),
    ("metrics_port", 70000, "--metrics-port must be a port number"),
    ("cache_size", "9" * 400, "invalid --cache-size"),
    ("cache_size", "lots", "invalid --cache-size"),
    ("endpoint_url", "htp:/x", "invalid --endpoint-url"),
    ("endpoint_url", "http://", "invalid --endpoint-url"),
    ("log_level", "loud", "--log-level must be one of"),
    ("overlay", "/o", "--overlay needs --write"),
    ("store", "nowhere", "malformed store URL"),
    ("mountpoint", "", "mount needs REF and MOUNTPOINT"),
])
def test_validate_refuses_bad_input(field: str, value: Any, words: str) -> None:
    req = dataclasses.replace(MountRequest("a/b", "/m"), **{field: value})
    with pytest.raises(UsageError, match=words) as cli:
        req.validate()
    assert cli.value.exit_code == 2 and not isinstance(cli.value, ConfigError)
    service = dataclasses.replace(req, service=True)
    with pytest.raises(ConfigError) as conf:
        service.validate()
    assert conf.value.exit_code == EX_CONFIG and "--" not in str(conf.value)  # conf keys, not flags


def test_validate_makes_paths_absolute_and_the_store_normal(tmp_path: Path,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    req = MountRequest("a/b", "mnt", store="./st/", cache_dir="c", write=True, overlay="o", log_level="DEBUG",
                       timeout=5, metrics_port=9100).validate()
    assert (req.mountpoint, req.cache_dir, req.overlay) == (str(tmp_path / "mnt"), str(tmp_path / "c"),
                                                            str(tmp_path / "o"))
    assert req.store == f"file://{tmp_path / 'st'}" and req.log_level == "debug"


@pytest.fixture
def version(file_store_url: str, tmp_path: Path) -> str:
    ds = Dataset.create("req", "ops", store=file_store_url)
    ds.add_files(write_tree(tmp_path / "src", {"a.txt": "alpha\n"}))
    ds.finalize()
    return ds.id


@pytest.mark.fuse
@pytest.mark.usefixtures("require_fuse")
def test_bad_mount_options_are_one_line_exit_2_and_mount_nothing(
        version: str, file_store_url: str, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    base = ["mount", version, str(mnt), "--store", file_store_url, "--cache-dir", str(tmp_path / "cache")]
    for extra, words in (
        (["--timeout", "nan"], "--timeout must be a positive number"),
        (["--timeout", "inf"], "--timeout must be a positive number"),
        (["--timeout", "-1"], "--timeout must be a positive number"),
        (["--timeout", "soon"], "--timeout must be seconds"),
        (["--metrics-port", "-1"], "--metrics-port must be a port number"),
        (["--metrics-port", "70000"], "--metrics-port must be a port number"),
        (["--cache-size", "9" * 400], "invalid --cache-size"),
        (["--endpoint-url", "htp:/x"], "invalid --endpoint-url"),
        (["--log-level", "loud"], "--log-level must be one of"),
        (["--overlay", str(tmp_path / "o")], "--overlay needs --write"),
    ):
        r = run_cli(*base, *extra, check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == 2 and len(lines) == 1 and words in lines[0], (extra, r.returncode, r.stderr)
        assert not is_mounted(mnt)


@pytest.mark.fuse
@pytest.mark.usefixtures("require_fuse")
def test_bad_values_in_a_conf_or_fstab_exit_78(version: str, file_store_url: str, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    for line, words in (("timeout = nan", "timeout must be a positive number"),
                        ("metrics_port = 70000", "metrics_port must be a port number"),
                        ("cache_size = " + "9" * 400, "invalid cache_size")):
        conf = tmp_path / "m.conf"
        conf.write_text(f"dataset = {version}\nmountpoint = {mnt}\nstore = {file_store_url}\n{line}\n")
        r = run_cli("mount", "--config", str(conf), check=False)
        lines = r.stderr.strip().splitlines()
        assert r.returncode == EX_CONFIG and len(lines) == 1 and words in lines[0], (line, r.stderr)
    r = run_cli(version, str(mnt), "-o", f"ro,store={file_store_url},timeout=nan", check=False)
    assert r.returncode == EX_CONFIG and "timeout must be a positive number" in r.stderr, r.stderr
    assert not is_mounted(mnt)


@pytest.mark.fuse
@pytest.mark.usefixtures("require_fuse")
def test_a_daemon_that_cannot_start_fully_is_a_failed_mount(
        version: str, file_store_url: str, tmp_path: Path) -> None:
    """The metrics port is taken: `mount` must not say 0 and leave a mount whose daemon then dies."""
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        try:
            r = run_cli("mount", version, str(mnt), "--store", file_store_url, "--cache-dir",
                        str(tmp_path / "cache"), "--metrics-port", str(port), check=False)
            lines = r.stderr.strip().splitlines()
            assert r.returncode != 0 and len(lines) == 1, r.stderr
            assert "cannot serve metrics on 127.0.0.1" in lines[0] and "Traceback" not in r.stderr
            assert not is_mounted(mnt)
        finally:
            force_unmount(mnt)
    # And with a free port, the same mount is live and serves.
    with cli_mount(version, mnt, file_store_url, tmp_path / "cache", "--metrics-port", str(port)) as m:
        assert (m / "a.txt").read_text() == "alpha\n"
