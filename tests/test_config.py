"""fsmount/config.py: environment and defaults in one place, store identity, sizes and endpoints checked."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

from fsmount import config
from fsmount.api.workspace import Workspace
from fsmount.errors import UsageError
from fsmount.store.local import LocalStore
from tests.helpers import run_cli, run_json, write_tree

ROOT = Path(__file__).resolve().parent.parent


def test_store_urls_are_normalised(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    p = tmp_path / "store"
    (tmp_path / "link").symlink_to(tmp_path)
    want = f"file://{p.resolve()}"
    monkeypatch.chdir(tmp_path)
    for spelling in (str(p), f"{p}/", f"file://{p}", f"file://{p}//", "./store", "file://./store",
                     f"file://{tmp_path}/link/store", f"{tmp_path}/./x/../store"):
        assert config.normalise_store_url(spelling) == want, spelling
    assert config.normalise_store_url("s3://bucket/pre/fix/") == "s3://bucket/pre/fix"
    assert config.normalise_store_url("s3://bucket/") == "s3://bucket"
    assert config.normalise_store_url("s3://bucket//p//") == "s3://bucket/p"
    for bad in ("store", "ftp://x/y", "s3:///p", "file://", "s3://b/p?x=1", "file://store", "file://host/x"):
        with pytest.raises(UsageError):
            config.normalise_store_url(bad)
    monkeypatch.setenv("FSMOUNT_STORE", f"{p}/")
    assert config.store_url() == want and Workspace().store_url == want
    assert Workspace(LocalStore(f"{p}/")).store_url == want


def test_current_draft_is_found_whatever_the_store_spelling(tmp_path: Path) -> None:
    p = tmp_path / "store"
    src = write_tree(tmp_path / "src", {"a.txt": "a"})
    draft = run_json("--store", str(p), "create", "--project", "cv", "--name", "x")["id"]
    run_cli("--store", f"file://{p}/", "add", str(src))
    closed = run_json("--store", f"file://{p}", "close")
    assert closed["id"] == draft and closed["state"] == "final"


def test_sizes_parse_and_absurd_ones_are_one_line(monkeypatch: pytest.MonkeyPatch) -> None:
    assert config.parse_size("20GiB") == 20 * 2**30
    assert config.parse_size("512M") == 512_000_000
    assert config.parse_size("1.5TB") == 1_500_000_000_000
    assert config.parse_size("1.5KiB") == 1536
    assert config.parse_size("4096") == 4096
    assert config.parse_size(12) == 12
    for bad in ("9" * 400, "9" * 20 + "EiB", "-1", "1e3", "lots", "", "nan", 2**64):
        with pytest.raises(UsageError):
            config.parse_size(bad)
    monkeypatch.setenv("FSMOUNT_CACHE_SIZE", "1GiB")
    assert config.cache_size() == 2**30 and config.cache_size("2GiB") == 2 * 2**30
    monkeypatch.setenv("FSMOUNT_CACHE_SIZE", "9" * 400)
    with pytest.raises(UsageError, match="FSMOUNT_CACHE_SIZE"):
        config.cache_size()


def test_endpoint_urls(monkeypatch: pytest.MonkeyPatch) -> None:
    for good in ("http://127.0.0.1:9000", "https://s3.example.com", "http://[::1]:9000/"):
        assert config.check_endpoint_url(good) == good
    for bad in ("127.0.0.1:9000", "http://", "ftp://host", "http://host:99999", "http://host:port", "http://[::1"):
        with pytest.raises(UsageError):
            config.check_endpoint_url(bad)
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_ENDPOINT_URL_S3", raising=False)
    assert config.s3_endpoint_url() is None
    monkeypatch.setenv("AWS_ENDPOINT_URL", "http://a:1")
    assert config.s3_endpoint_url() == "http://a:1"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "http://b:2")
    assert config.s3_endpoint_url() == "http://b:2" and config.s3_endpoint_url("http://c:3") == "http://c:3"
    monkeypatch.setenv("AWS_ENDPOINT_URL_S3", "nonsense")
    with pytest.raises(UsageError, match="AWS_ENDPOINT_URL_S3"):
        config.s3_endpoint_url()


def test_bad_sizes_and_endpoints_are_one_line_in_every_command(tmp_path: Path) -> None:
    store = str(tmp_path / "store")
    run_cli("--store", store, "sync", "--folder", str(write_tree(tmp_path / "src", {"a": "a"})),
            "--project", "p", "--name", "n")
    for args, words in (
        (["--store", store, "--cache-size", "9" * 400, "ls", "p/n"], "invalid cache size"),
        (["--store", "s3://bucket/p", "--endpoint-url", "htp:/nowhere", "list"], "invalid endpoint URL"),
    ):
        r = run_cli(*args, check=False)
        assert r.returncode == 2, (args, r.stderr)
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and words in lines[0], r.stderr


# Environment variables fsmount reads only through fsmount/config.py (NOTIFY_SOCKET is systemd's
# protocol, read where it is spoken; logs.py reads secrets' values only to scrub them).
ALLOWED = {"fsmount/config.py", "fsmount/service/notify.py", "fsmount/logs.py"}


def test_no_environment_reads_outside_config() -> None:
    uses = []
    for path in sorted([*(ROOT / "fsmount").rglob("*.py"), *(ROOT / "cli").glob("*.py")]):
        rel = str(path.relative_to(ROOT))
        if rel in ALLOWED:
            continue
        lines = path.read_text().splitlines()
        for node in ast.walk(ast.parse(path.read_text())):
            if (isinstance(node, ast.Attribute) and node.attr in ("environ", "getenv")
                    and isinstance(node.value, ast.Name) and node.value.id == "os"):
                uses.append(f"{rel}: {lines[node.lineno - 1].strip()}")
    # The one use left is a write: a mount's credentials file into its own daemon's environment.
    assert uses == ["fsmount/service/credentials.py: os.environ.update(load_credentials(path))"]
