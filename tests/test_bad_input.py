"""Bad input from the command line: names, REFs, store URLs, sizes and mount options; one line, exit 2.

Each case runs the real console entry point in a subprocess against a real store; no mount
option case leaves its mountpoint mounted (checked against /proc/self/mounts).
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path

import msgpack
import pytest

from fsmount.commit import registry
from fsmount.store import open_store
from tests.helpers import run_cli, run_json, write_tree


@pytest.fixture
def env_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FSMOUNT_STORE", store_url)
    return store_url


@pytest.fixture
def file_env(file_store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    """A file:// store only: for input checked before any store is touched (the same for every store)."""
    monkeypatch.setenv("FSMOUNT_STORE", file_store_url)
    return file_store_url


def _sync_one(tmp_path: Path) -> str:
    src = write_tree(tmp_path / "src", {"a.txt": "a"})
    return run_json("sync", "--folder", str(src), "--project", "b", "--name", "d", "--tag", "t")["id"]


@pytest.fixture
def version(env_store: str, tmp_path: Path) -> str:
    """One final version, b/d@1.0.0, tagged `t`, on file:// and on moto."""
    return _sync_one(tmp_path)


@pytest.fixture
def file_version(file_env: str, tmp_path: Path) -> str:
    """The same on file:// only."""
    return _sync_one(tmp_path)


def _mounts() -> str:
    return Path("/proc/self/mounts").read_text()


def assert_usage_error(proc: subprocess.CompletedProcess[str], pattern: str = "") -> None:
    """One line on stderr, no traceback, no internal error, exit 2."""
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr and "internal error" not in proc.stderr, proc.stderr
    assert proc.returncode == 2, (proc.returncode, proc.stderr)
    assert pattern in lines[0], lines[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("create", "--project", "p", "--name", "a\nb"), "invalid dataset name"),
        (("create", "--project", "p", "--name", "a\tb"), "invalid dataset name"),
        (("create", "--project", "p", "--name", ""), "invalid dataset name"),
        (("create", "--project", "p", "--name", "x\x85"), "invalid dataset name"),  # C1
        (("create", "--project", "p", "--name", "a@b"), "invalid dataset name"),
        (("create", "--project", "p", "--name", "n" * 256), "invalid dataset name"),
        (("create", "--project", "", "--name", "n"), "invalid project"),
        (("create", "--project", "a//b", "--name", "n"), "invalid project"),
        (("create", "--project", "/a", "--name", "n"), "invalid project"),
        (("create", "--project", " p", "--name", "n"), "invalid project"),
        (("create", "--project", "tag:x", "--name", "n"), "invalid project"),
        (("create", "--project", "p", "--name", "n", "--version", "1 0"), "invalid version"),
        (("create", "--project", "p", "--name", "n", "--version", "v" * 65), "invalid version"),
        (("create", "--project", "p", "--name", "n", "--version", ""), "invalid version"),
        (("create", "--project", "p", "--name", "n", "--tag", "x\ty"), "invalid tag"),
        (("create", "--project", "p", "--name", "n", "--tag", " x"), "invalid tag"),
    ],
)
def test_bad_names_are_refused_and_nothing_is_stored(
    file_env: str, args: tuple[str, ...], message: str
) -> None:
    assert_usage_error(run_cli(*args, check=False), message)
    assert registry.list_states(open_store(file_env)) == []


def test_bad_tags_are_refused_and_good_ones_kept(file_version: str) -> None:
    version = file_version
    for tag in ("x\ty", "", "a\n", " x", "\x7f"):
        assert_usage_error(run_cli("tag", version, "--add", tag, check=False), "invalid tag")
    assert run_json("info", version)["tags"] == ["t"]
    assert run_json("tag", version, "--add", "ok/with:@")["tags"] == ["ok/with:@", "t"]


@pytest.mark.parametrize(
    "ref", ["b/d@", "b/d\n", "b/d ", " b/d", "", "B/D@1.0.0\n", "d", "tag:", "b/", "/d", "b/d@1 0", "ZZZZ"]
)
def test_malformed_refs_are_usage_errors(version: str, ref: str) -> None:
    assert_usage_error(run_cli("info", ref, check=False), "invalid dataset reference")


def test_well_formed_refs_resolve_or_are_not_found(version: str) -> None:
    assert run_json("info", "b/d@1.0.0")["id"] == version
    assert run_json("info", "b/d")["id"] == version
    assert run_json("info", version[:8])["id"] == version
    assert run_json("info", "tag:t")["id"] == version
    for ref in (version[:8].upper(), version.upper()):
        if ref != ref.lower():  # hex is lowercase only (an all-digit prefix has no upper case)
            assert_usage_error(run_cli("info", ref, check=False), "dataset reference")
    for ref in ("b/d@9.9", "b/x", "tag:none", "0000"):
        proc = run_cli("info", ref, check=False)
        assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("file://host/x", "malformed store URL"),
        ("file://data/x", "malformed store URL"),
        ("s3://bucket/p#frag", "malformed store URL"),
        ("s3://bucket/p?x=1", "malformed store URL"),
        ("s3://Bucket/p", "invalid S3 bucket name"),
        ("s3://bu/p", "invalid S3 bucket name"),
        ("s3://" + "b" * 64, "invalid S3 bucket name"),
        ("s3://bucket_x", "invalid S3 bucket name"),
        ("s3://-bucket", "invalid S3 bucket name"),
    ],
)
def test_bad_store_urls_are_one_line(url: str, message: str) -> None:
    assert_usage_error(run_cli("--store", url, "list", check=False), message)


def test_file_urls_are_literal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """'%20', '?' and '#' are ordinary characters of a file:// path (FORMAT.md §2)."""
    folder = tmp_path / "a b%20c?d#e"
    monkeypatch.chdir(tmp_path)
    src = write_tree(tmp_path / "src", {"x": "x"})
    run_cli("--store", f"file://{folder}", "sync", "--folder", str(src), "--project", "p", "--name", "n")
    assert (folder / "state").is_dir()
    assert run_json("--store", "file://./a b%20c?d#e", "list")["datasets"][0]["name"] == "n"


@pytest.mark.parametrize(
    "size", ["99999999999999999999999999999", "9" * 400, "1", "4095", "2GiB", "1GiB1", "-4096", "1e9", "nan"]
)
def test_block_size_out_of_range_is_one_line(file_env: str, tmp_path: Path, size: str) -> None:
    src = write_tree(tmp_path / "src", {"x": "x"})
    assert_usage_error(run_cli("create", "--project", "p", "--name", "n", "--block-size", size, check=False))
    assert_usage_error(run_cli("sync", "--folder", str(src), "--project", "p", "--name", "n",
                               "--block-size", size, check=False))


def test_block_sizes_in_range_are_taken(file_env: str) -> None:
    for size in ("4KiB", "64KiB", "1GiB", "4096"):
        run_cli("create", "--project", "p", "--name", f"n{size}", "--block-size", size)


@pytest.mark.parametrize(
    "args",
    [
        ("--cache-size", "9" * 400),
        ("--timeout", "nan"),
        ("--timeout", "inf"),
        ("--timeout", "-1"),
        ("--metrics-port", "-1"),
        ("--metrics-port", "70000"),
        ("--endpoint-url", "http://[::1"),
        ("--endpoint-url", "not a url"),
        ("--endpoint-url", "http://host:99999"),
    ],
)
def test_bad_mount_options_are_one_line_and_mount_nothing(
    file_version: str, tmp_path: Path, args: tuple[str, ...]
) -> None:
    version = file_version
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    assert_usage_error(run_cli("mount", version, str(mnt), *args, check=False, timeout=60))
    assert f" {mnt} " not in _mounts()  # (other processes on this machine may mount meanwhile)


def test_bad_cache_size_and_endpoint_on_other_commands(file_version: str) -> None:
    version = file_version
    assert_usage_error(run_cli("--cache-size", "9" * 400, "ls", version, check=False))
    proc = run_cli("--endpoint-url", "http://[::1", "--store", "s3://bucket", "list", check=False)
    assert_usage_error(proc, "endpoint")


# -- one bad state object does not take the store down ------------------------------------------


def _put_state(store_url: str, vid: str, data: bytes) -> None:
    open_store(store_url).put(f"state/{vid}", data)


def test_a_bad_state_is_skipped_with_one_warning(version: str, env_store: str) -> None:
    garbage, newer = "a" * 32, "b" * 32
    _put_state(env_store, garbage, b"\xc1garbage")
    _put_state(env_store, newer, msgpack.packb({"format": 3, "type": "state", "id": newer}))
    _put_state(env_store, "sub/" + "c" * 32, b"ignored: not state/<id>")

    listed = run_cli("list", "--json")
    assert listed.returncode == 0, listed.stderr
    assert [d["id"] for d in json.loads(listed.stdout)["datasets"]] == [version]
    warnings = listed.stderr.strip().splitlines()
    assert len(warnings) == 2, listed.stderr  # once per bad key, though the command lists twice or more
    assert any(f"state/{garbage}" in w for w in warnings) and any(f"state/{newer}" in w for w in warnings)
    assert any("newer fsmount" in w for w in warnings)

    for args in (("info", "b/d"), ("ls", "b/d"), ("info", "tag:t"), ("info", version[:6])):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 0, (args, proc.stderr)
        assert "Traceback" not in proc.stderr and len(proc.stderr.strip().splitlines()) == 2

    for vid, message in ((garbage, "undecodable"), (newer, "newer fsmount")):
        proc = run_cli("info", vid, check=False)
        assert proc.returncode == 1 and proc.stderr.strip().splitlines() == [proc.stderr.strip()]
        assert f"state/{vid}" in proc.stderr and message in proc.stderr

    check = run_cli("check", check=False)
    assert check.returncode != 0
    found = check.stdout + check.stderr
    assert f"state/{garbage}" in found and f"state/{newer}" in found

    gc = run_cli("gc", "--grace", "0", check=False)  # gc must see every version: it refuses, deletes nothing
    assert gc.returncode == 1, gc.stderr
    assert "error: state/" in gc.stderr.strip().splitlines()[-1]
    assert run_cli("get", "b/d", check=False).returncode == 0


def test_delete_refuses_while_a_state_is_unreadable(env_store: str, tmp_path: Path) -> None:
    """An unreadable state may be a child of the version to delete: delete names it and deletes
    nothing, unless --force (gc's rule too)."""
    src = write_tree(tmp_path / "src", {"x": "x"})
    proc = run_cli("sync", "--folder", str(src), "--project", "q", "--name", "del", "--json")
    vid = json.loads(proc.stdout)["id"]
    garbage = "d" * 32
    _put_state(env_store, garbage, b"\xc1garbage")
    for args in (("delete", vid), ("delete", "--project", "q", "--name", "del", "--entire-dataset")):
        proc = run_cli(*args, check=False)
        assert proc.returncode == 1, proc.stderr
        assert f"state/{garbage}" in proc.stderr.strip().splitlines()[-1] and "Traceback" not in proc.stderr
        assert run_cli("info", vid, check=False).returncode == 0  # still there
    forced = run_cli("delete", vid, "--force", check=False)
    assert forced.returncode == 0, forced.stderr
    assert run_cli("info", vid, check=False).returncode != 0


def test_hostile_names_are_escaped_on_a_terminal(file_env: str, tmp_path: Path) -> None:
    """A name with an escape sequence or a newline (legal on POSIX, so a store may hold it) is shown
    with \\xNN escapes: it can neither drive the terminal nor fake an extra line of output."""
    evil = "evil\x1b[2J\nA fake-line\r\x9bx"
    src = write_tree(tmp_path / "src", {evil: "x", "ok.txt": "y"})
    synced = run_cli("sync", "--folder", str(src), "--project", "q", "--name", "esc", "--json")
    vid = json.loads(synced.stdout)["id"]
    for args in (("ls", vid), ("ls", "-l", vid), ("list", vid), ("info", vid)):
        out = run_cli(*args).stdout
        assert not any(c in out for c in "\x1b\r\x9b"), (args, out)
        assert "A fake-line" not in out.splitlines() and "evil\\x1b[2J\\x0aA fake-line" in out, (args, out)
    as_json = json.loads(run_cli("ls", vid, "--json").stdout)  # JSON keeps the name exact
    assert evil in {r["path"] for r in as_json["entries"]}
    missing = run_cli("ls", vid, "no\x1bsuch\ndir", check=False)
    assert missing.returncode != 0 and len(missing.stderr.strip().splitlines()) == 1, missing.stderr
    assert "\x1b" not in missing.stderr
