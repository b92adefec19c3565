"""The CLI end to end in subprocesses: the lifecycle, --json output, and one-line errors."""

from __future__ import annotations

from itertools import pairwise
from pathlib import Path

import pytest

from tests.helpers import hash_tree, run_cli, run_json, write_tree


@pytest.fixture
def env_store(store_url: str, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FSMOUNT_STORE", store_url)
    return store_url


def assert_one_line_error(proc, pattern: str) -> None:  # type: ignore[no-untyped-def]
    assert proc.returncode != 0
    lines = proc.stderr.strip().splitlines()
    assert len(lines) == 1, proc.stderr
    assert "Traceback" not in proc.stderr
    assert pattern in lines[0], lines[0]


def test_full_lifecycle(env_store: str, tmp_path: Path) -> None:
    src = write_tree(
        tmp_path / "v1",
        {"train/a.txt": "a", "train/b.txt": "b", "val/c.txt": "c", "meta/": "", "ln": "->train/a.txt"},
    )
    created = run_json("create", "--project", "cv", "--name", "imgs", "--tag", "raw")
    assert created["state"] == "draft" and created["version"] == "1.0.0"
    v1 = created["id"]
    assert run_json("add", str(src))["staged"] == 5
    up = run_json("upload")
    assert up["blocks_uploaded"] == 3
    closed = run_json("close", "-m", "first")
    assert closed == {"id": v1, "state": "final", "files": 4, "bytes": 3}

    v2 = run_json("create", "--project", "cv", "--name", "imgs", "--parent", "cv/imgs")["id"]
    extra = write_tree(tmp_path / "extra", {"d.txt": "d"})
    run_cli("add", str(extra / "d.txt"), "--dataset-folder", "val")
    assert run_json("remove", "train/b.txt")["removed"] == 1
    run_cli("close")

    info = run_json("info", "cv/imgs")
    assert info["id"] == v2 and info["parents"] == [v1] and info["lineage"] == [v2, v1]
    assert (info["added"], info["modified"], info["removed"]) == (["val/d.txt"], [], ["train/b.txt"])
    assert info["files"] == 4
    assert [d["id"] for d in run_json("list", "--project", "cv")["datasets"]] == [v1, v2]
    assert [d["id"] for d in run_json("list", "--tag", "raw")["datasets"]] == [v1]
    assert run_json("diff", v1, v2) == {
        "from": v1,
        "to": v2,
        "added": ["val/d.txt"],
        "modified": [],
        "removed": ["train/b.txt"],
    }
    listing = run_json("ls", "cv/imgs", "val")["entries"]
    assert [e["path"] for e in listing] == ["val/c.txt", "val/d.txt"]
    assert "val/d.txt" in run_cli("ls", "cv/imgs", "-r").stdout
    assert run_json("verify", v2)["ok"] is True

    path = run_json("get", "cv/imgs")["path"]
    expected = {**hash_tree(src), "val/d.txt": hash_tree(extra)["d.txt"]}
    del expected["train/b.txt"]
    assert hash_tree(Path(path)) == expected
    assert run_cli("get", "cv/imgs").stdout.strip() == path
    copy = tmp_path / "mutable"
    run_cli("get", v1, "--copy", str(copy))
    assert hash_tree(copy) == hash_tree(src)
    assert_one_line_error(run_cli("get", v1, "--copy", str(copy), check=False), "not empty")
    run_cli("get", v2, "--copy", str(copy), "--overwrite")
    assert hash_tree(copy) == expected

    assert run_json("tag", v2, "--add", "best", "--add", "x")["tags"] == ["best", "x"]
    assert run_json("tag", v2, "--remove", "x")["tags"] == ["best"]
    assert run_json("get", "tag:best")["id"] == v2
    assert run_json("publish", "cv/imgs")["state"] == "published"
    assert_one_line_error(run_cli("delete", v1, check=False), "parent of 1")
    run_cli("delete", v2)
    run_cli("delete", v1)
    young = run_cli("gc").stdout  # everything is minutes old: the default grace keeps it, and says so
    assert young.startswith("deleted 0 objects") and "younger than the grace period (1h)" in young, young
    assert "--grace 0" in young and "[default: 1h]" in run_cli("gc", "--help").stdout
    assert run_json("gc", "--grace", "0")["deleted"] > 0
    assert run_json("list")["datasets"] == []


def test_sync_prints_changes(env_store: str, tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "f", {"a": "1", "b": "2"})
    first = run_json("sync", "--folder", str(folder), "--project", "p", "--name", "s")
    assert first["paths"]["added"] == ["a", "b"] and first["state"] == "final"
    assert first["counts"] == {"added": 2, "modified": 0, "removed": 0} and not first["truncated"]
    (folder / "a").write_text("changed")
    (folder / "b").unlink()
    (folder / "c").write_text("3")
    out = run_cli("sync", "--folder", str(folder), "--project", "p", "--name", "s").stdout
    assert "M a" in out and "R b" in out and "A c" in out and "1 added, 1 modified, 1 removed" in out


def test_sync_reports_counts_and_a_sample_unless_listing(env_store: str, tmp_path: Path) -> None:
    folder = write_tree(tmp_path / "f", {f"d/{i:03}.txt": str(i) for i in range(25)})
    res = run_json("sync", "--folder", str(folder), "--project", "p", "--name", "many")
    assert res["counts"]["added"] == 25 and res["truncated"]
    assert res["paths"]["added"] == [f"d/{i:03}.txt" for i in range(10)]
    for i in range(25):
        (folder / f"d/{i:03}.txt").write_text(f"v2 {i}")
    out = run_cli("sync", "--folder", str(folder), "--project", "p", "--name", "many").stdout
    assert sum(line.startswith("M d/") for line in out.splitlines()) == 10
    assert "... and 15 more modified (--list shows all)" in out
    (folder / "d/000.txt").write_text("v3")
    (folder / "new.txt").write_text("n")
    full = run_json("sync", "--folder", str(folder), "--project", "p", "--name", "many", "--list")
    assert full["paths"] == {"added": ["new.txt"], "modified": ["d/000.txt"], "removed": []}
    assert not full["truncated"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (("get", "nope/none"), "no dataset named"),
        (("get", "ffffffff"), "no dataset version matches"),
        (("info", "tag:missing"), "carries tag"),
        (("add", "/definitely/not/here"), "no such file"),
        (("close",), "no current draft"),
        (("--store", "s3://", "list"), "malformed store URL"),
        (("--store", "gopher://x", "list"), "unsupported store URL"),
        (("gc", "--grace", "soon"), "invalid duration"),
        (("create", "--project", "p", "--name", "n", "--parent", "zzzz"), "invalid dataset reference"),
        (("sync", "--folder", "/nonexistent", "--project", "p", "--name", "n"), "not a folder"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(env_store: str, args: tuple[str, ...], message: str) -> None:
    assert_one_line_error(run_cli(*args, check=False), message)


def test_errors_on_wrong_states(env_store: str, tmp_path: Path) -> None:
    (tmp_path / "x").write_text("x")
    draft = run_json("create", "--project", "p", "--name", "n")["id"]
    assert_one_line_error(
        run_cli("create", "--project", "p", "--name", "m", "--parent", draft, check=False), "not final"
    )
    run_cli("add", str(tmp_path / "x"))
    run_cli("close")
    assert_one_line_error(run_cli("close", "--id", draft, check=False), "already final")
    assert_one_line_error(run_cli("add", str(tmp_path / "x"), "--id", draft, check=False), "already final")
    assert_one_line_error(run_cli("publish", draft[:6] + "zz", check=False), "invalid dataset reference")
    first = run_json("create", "--project", "p", "--name", "n")["id"]
    second = run_json("create", "--project", "p", "--name", "n")["id"]
    # Ids are random: find the longest prefix shared by two of them, and ask for it.
    ids = sorted([first, second, draft])
    shared = max((_common_prefix(a, b) for a, b in pairwise(ids)), key=len)
    if len(shared) >= 4:
        assert_one_line_error(run_cli("info", shared, check=False), "ambiguous")
    assert_one_line_error(run_cli("info", "abc", check=False), "invalid dataset reference")


def _common_prefix(a: str, b: str) -> str:
    n = 0
    while n < min(len(a), len(b)) and a[n] == b[n]:
        n += 1
    return a[:n]


def test_newer_format_in_store_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import msgpack

    store = tmp_path / "store"
    monkeypatch.setenv("FSMOUNT_STORE", f"file://{store}")
    (tmp_path / "x").write_text("x")
    ref = run_json("sync", "--folder", str(tmp_path), "--project", "p", "--name", "n")["id"]
    state = store / "state" / ref
    data = msgpack.unpackb(state.read_bytes())
    data["format"] = 99
    before = msgpack.packb(data)
    state.write_bytes(before)
    assert_one_line_error(run_cli("info", ref, check=False), "newer fsmount")
    assert_one_line_error(run_cli("tag", ref, "--add", "t", check=False), "newer fsmount")
    assert state.read_bytes() == before  # a failed command changes nothing


def test_unreachable_store_and_bad_credentials(moto_server, monkeypatch: pytest.MonkeyPatch) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import _free_port

    monkeypatch.setenv("AWS_ENDPOINT_URL", f"http://127.0.0.1:{_free_port()}")
    monkeypatch.setenv("AWS_MAX_ATTEMPTS", "1")
    assert_one_line_error(run_cli("--store", "s3://bucket", "list", check=False), "cannot reach")
    monkeypatch.delenv("AWS_ACCESS_KEY_ID")
    monkeypatch.delenv("AWS_SECRET_ACCESS_KEY")
    monkeypatch.setenv("AWS_SHARED_CREDENTIALS_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_CONFIG_FILE", "/nonexistent")
    monkeypatch.setenv("AWS_EC2_METADATA_DISABLED", "true")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    assert_one_line_error(run_cli("--store", "s3://bucket", "list", check=False), "no credentials")
