"""Packed small files via real mounts: right bytes, whole packs per epoch, damage is EIO."""

from __future__ import annotations

import hashlib
import json
import os
import random
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import pytest

from fsmount.format.hashing import object_key
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli
from tests.pack_fixtures import MiB, PackedVersion, make_packed_version, small_files

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]


def _status(mnt: Path) -> dict[str, Any]:
    counters: dict[str, Any] = json.loads(run_cli("status", str(mnt), "--json").stdout)["counters"]
    return counters


def _read(path: Path) -> bytes | int:
    try:
        return path.read_bytes()
    except OSError as e:
        return e.errno or -1


def _epoch(mnt: Path, paths: list[str], threads: int = 16, seed: int = 7) -> dict[str, bytes | int]:
    order = list(paths)
    random.Random(seed).shuffle(order)
    with ThreadPoolExecutor(threads) as pool:
        return dict(zip(order, pool.map(lambda p: _read(mnt / p), order), strict=True))


def _check_all(pv: PackedVersion, got: dict[str, bytes | int]) -> None:
    bad = [p for p, data in got.items() if data != pv.files[p]]
    assert not bad, f"{len(bad)} files read wrong, e.g. {bad[:3]}"


def test_a_shuffled_epoch_reads_right_and_fetches_each_pack_about_once(s3_store_url: str,
                                                                      tmp_path: Path) -> None:
    """GETs of pack bytes over a shuffled 16-thread epoch stay within 1.2x the packs (issue 10)."""
    files = small_files(600, 20, lo=4 * 1024, hi=24 * 1024)
    files["big/large.bin"] = random.Random(3).randbytes(5 * MiB)  # not packed: 4 MiB bare blocks
    files["empty.txt"] = b""
    pv = make_packed_version(s3_store_url, files, pack_size=256 * 1024)
    assert len(pv.packs) >= 20
    with cli_mount(pv.id, tmp_path / "mnt", s3_store_url, tmp_path / "cache") as mnt:
        got = _epoch(mnt, list(files))
        _check_all(pv, got)
        c = _status(mnt)
    pack_gets = c["pack_fetches"] + c["ranged_reads"]
    assert c["packed_reads"] >= 600
    assert pack_gets <= 1.2 * len(pv.packs), c
    assert c["pack_fetches"] <= len(pv.packs)  # single flight: never one pack twice
    assert c["store"]["integrity_errors"] == 0 and c["errors"] == 0


def test_one_small_file_alone_is_one_ranged_get_of_its_bytes(s3_store_url: str, tmp_path: Path) -> None:
    files = small_files(200, 4)
    pv = make_packed_version(s3_store_url, files, pack_size=4 * MiB)
    path = sorted(files)[57]
    with cli_mount(pv.id, tmp_path / "mnt", s3_store_url, tmp_path / "cache") as mnt:
        assert (mnt / path).read_bytes() == files[path]
        c = _status(mnt)
    assert c["ranged_reads"] == 1 and c["pack_fetches"] == 0, c
    assert c["store"]["ranged_bytes"] == len(files[path])


def _corrupt_file_store(store_url: str, h: bytes, offset: int) -> None:
    p = Path(store_url.removeprefix("file://")) / object_key(h)
    data = bytearray(p.read_bytes())
    data[offset] ^= 0x55
    os.chmod(p, 0o644)
    p.write_bytes(bytes(data))


@pytest.mark.parametrize("in_place", [False, True], ids=["cached", "in-place"])
def test_a_corrupted_byte_in_a_pack_is_eio_for_its_file_only(
        file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, in_place: bool) -> None:
    if in_place:
        monkeypatch.delenv("FSMOUNT_CACHE_LOCAL_STORE")
    files = small_files(120, 3)
    pv = make_packed_version(file_store_url, files, pack_size=8 * MiB)
    assert len(pv.packs) == 1
    victim = sorted(files)[40]
    h, off, _ = pv.locator[victim]
    _corrupt_file_store(file_store_url, h, off + 100)
    with cli_mount(pv.id, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        got = _epoch(mnt, list(files), threads=8)
        got_again = _read(mnt / victim)
        c = _status(mnt)
    assert got.pop(victim) == got_again == 5  # EIO, never wrong bytes
    _check_all(pv, got)
    assert c["store"]["integrity_errors"] >= 1
    if not in_place:
        assert c["pack_errors"] >= 1  # the whole pack failed its hash; its files were read by ranges


def test_a_damaged_cached_pack_is_never_served(s3_store_url: str, tmp_path: Path) -> None:
    """A byte changed in the cached pack file: the slice fails its file's SHA-256, the pack is dropped
    and the file comes right from the store."""
    files = small_files(80, 2)
    pv = make_packed_version(s3_store_url, files, pack_size=8 * MiB)
    cache = tmp_path / "cache"
    with cli_mount(pv.id, tmp_path / "mnt", s3_store_url, cache) as mnt:
        _check_all(pv, _epoch(mnt, list(files), threads=4))
    h = pv.packs[0]
    victim = sorted(files)[33]
    _, off, _ = pv.locator[victim]
    # diskcache keeps a large value as a file of its own: find the pack's by content
    packs = [p for p in cache.rglob("*.val") if hashlib.sha256(p.read_bytes()).digest() == h]
    assert len(packs) == 1
    data = bytearray(packs[0].read_bytes())
    data[off + 10] ^= 1
    packs[0].write_bytes(bytes(data))
    with cli_mount(pv.id, tmp_path / "mnt2", s3_store_url, cache) as mnt:
        assert (mnt / victim).read_bytes() == files[victim]
        c = _status(mnt)
    assert c["store"]["cache_integrity_errors"] == 1


def test_warm_reads_of_cached_packs_take_no_thread_hop(s3_store_url: str, tmp_path: Path) -> None:
    files = small_files(300, 6, lo=2048, hi=8192)
    pv = make_packed_version(s3_store_url, files, pack_size=512 * 1024)
    cache = tmp_path / "cache"
    with cli_mount(pv.id, tmp_path / "mnt", s3_store_url, cache) as mnt:
        _check_all(pv, _epoch(mnt, list(files)))
    with cli_mount(pv.id, tmp_path / "mnt2", s3_store_url, cache) as mnt:
        _check_all(pv, _epoch(mnt, list(files)))
        c = _status(mnt)
    assert c["store"]["gets"] == 0 and c["pack_fetches"] == 0 and c["ranged_reads"] == 0, c
    # one thread hop per pack to open its cache file, the rest straight from the page cache
    # Most warm reads take the no-hop path; a few fall back when the kernel has dropped the pages
    # meanwhile (RWF_NOWAIT then says so), which depends on the machine's memory pressure, not on us.
    assert c["packed_fast"] >= len(files) * 3 // 4, c


def test_a_local_store_is_read_in_place_and_damage_is_still_eio(
        file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSMOUNT_CACHE_LOCAL_STORE")
    blob = random.Random(5).randbytes(6 * MiB)
    files = {**small_files(50, 2), "big/a.bin": blob, "big/b.bin": blob}  # b shares a's blocks
    pv = make_packed_version(file_store_url, files, pack_size=MiB)
    cache = tmp_path / "cache"
    with cli_mount(pv.id, tmp_path / "mnt", file_store_url, cache) as mnt:
        _check_all(pv, _epoch(mnt, [p for p in files if p != "big/b.bin"], threads=4))
        c = _status(mnt)
        assert c["store"]["objects_fetched"] == 0 and c["store"]["in_place_reads"] > 0, c
        # The store changes under the mount: a block verified once is checked again (new identity).
        first = hashlib.sha256(blob[:4 * MiB]).digest()
        _corrupt_file_store(file_store_url, first, 7)
        assert _read(mnt / "big/b.bin") == 5
    cached = sum(p.stat().st_size for p in cache.rglob("*.val"))
    assert cached == 0  # nothing was copied into the cache
