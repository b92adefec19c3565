"""Audit of issue 9 ("never wrong bytes") for external files' cached chunks and for metadata attachments.

A byte flipped in the cached chunk of an external file (one not hashed by --hash: only the cache's own
check stands between it and a reader), or in an attachment's blob in the store: `get`, `get --copy`,
fsspec, `metadata --get` and the web UI never give the flipped bytes; `fsmount check --read-data`
names the damaged blob.
"""

from __future__ import annotations

import json
import os
from pathlib import Path

import httpx
import pytest

from fsmount.api.fsspec_fs import FsmountFileSystem
from fsmount.commit import attachments
from tests.helpers import hash_tree, run_cli, run_json, write_tree
from tests.ui_helpers import UiServer

CHUNK = 64 * 1024


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"file://{tmp_path / 'store'}"
    monkeypatch.setenv("FSMOUNT_STORE", url)
    return url


def _flip_cached(cache: Path, original: bytes) -> int:
    """Flip one byte in every cache file holding exactly `original`; how many there were."""
    n = 0
    for f in cache.rglob("*.val"):  # never the SQLite files: see test_audit_integrity._damage_cache
        if f.stat().st_size == len(original) and f.read_bytes() == original:
            data = bytearray(original)
            data[100] ^= 1
            f.write_bytes(bytes(data))
            n += 1
    return n


def test_a_flipped_byte_in_a_cached_external_chunk_is_never_served(
        store: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    src = write_tree(tmp_path / "src", {"big.bin": os.urandom(3 * CHUNK + 77), "small.txt": b"small\n"})
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", f"file://{src}")
    vid = run_json("create", "--project", "p", "--name", "ext", "--block-size", "64KiB")["id"]
    run_cli("add", "--links", f"file://{src}")
    run_cli("close")
    run_cli("warm", vid, "-q")
    cache = Path(os.environ["XDG_CACHE_HOME"])
    big = (src / "big.bin").read_bytes()
    assert _flip_cached(cache, big[CHUNK:2 * CHUNK]) == 1, "the second chunk is cached as a file"
    want = hash_tree(src)
    r = run_cli("get", vid, "--copy", str(tmp_path / "copy"), "-q", check=False)
    assert r.returncode == 0, r.stderr  # the damaged chunk is dropped and read again from its source
    assert hash_tree(tmp_path / "copy") == want
    assert _flip_cached(cache, big[CHUNK:2 * CHUNK]) == 1
    fs = FsmountFileSystem(store=store, skip_instance_cache=True)
    try:
        assert fs.cat_file(f"{vid}/big.bin", CHUNK + 50, CHUNK + 150) == big[CHUNK + 50:CHUNK + 150]
    finally:
        fs.workspace.close()
    assert _flip_cached(cache, big[CHUNK:2 * CHUNK]) == 1
    path = Path(run_cli("get", vid, "-q").stdout.strip().splitlines()[-1])
    assert hash_tree(path) == want


def test_a_flipped_byte_in_an_attachment_is_never_shown(store: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a\n"})
    vid = run_json("sync", "--folder", str(src), "--project", "p", "--name", "m")["id"]
    meta = write_tree(tmp_path / "m", {"stats.json": json.dumps({"accuracy": 0.9731, "n": 12345})})
    run_cli("metadata", vid, "--set", "stats", str(meta / "stats.json"))
    assert run_cli("check", "--read-data").returncode == 0
    (att,) = run_json("metadata", vid)["metadata"]
    blob = tmp_path / "store" / attachments.blob_key(bytes.fromhex(att["hash"]))
    blob.write_bytes(blob.read_bytes().replace(b"0.9731", b"0.1731"))  # same size, other bytes

    r = run_cli("metadata", vid, "--get", "stats", "-o", str(tmp_path / "out.json"), check=False)
    assert r.returncode != 0 and "damaged" in r.stderr and "Traceback" not in r.stderr, r.stderr
    assert not (tmp_path / "out.json").exists() or b"0.1731" not in (tmp_path / "out.json").read_bytes()
    r = run_cli("check", "--read-data", check=False)
    assert r.returncode != 0 and attachments.blob_key(bytes.fromhex(att["hash"])) in r.stdout + r.stderr, \
        r.stdout + r.stderr
    blob.unlink()
    r = run_cli("check", check=False)  # a missing blob is found without reading data
    assert r.returncode != 0 and "is missing" in r.stdout + r.stderr, r.stdout + r.stderr
    blob.write_bytes(json.dumps({"accuracy": 0.1731, "n": 12345}).encode())
    ui = UiServer(store, tmp_path / "uicache")
    try:
        page = httpx.get(f"{ui.url}/v/{vid}", timeout=30)
    finally:
        ui.stop()
    assert page.status_code == 200 and "0.1731" not in page.text and "unreadable" in page.text, page.text
