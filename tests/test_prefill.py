"""Small files go into the kernel's page cache at open (FUSE notify_store): no READ is ever sent."""

from __future__ import annotations

import errno
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


def _epoch(pv: PackedVersion, mnt: Path, threads: int = 16) -> None:
    order = sorted(pv.files)
    random.Random(11).shuffle(order)
    with ThreadPoolExecutor(threads) as pool:
        got = dict(zip(order, pool.map(lambda p: (mnt / p).read_bytes(), order), strict=True))
    bad = [p for p in order if got[p] != pv.files[p]]
    assert not bad, f"{len(bad)} files read wrong, e.g. {bad[:3]}"


def test_small_files_are_in_the_page_cache_after_open_and_no_read_is_sent(
        file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSMOUNT_CACHE_LOCAL_STORE")  # a local store, read in place
    files = small_files(300, 6, lo=1024, hi=40 * 1024)
    pv = make_packed_version(file_store_url, files, pack_size=MiB)
    with cli_mount(pv.id, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        _epoch(pv, mnt)
        first = _status(mnt)
        _epoch(pv, mnt)  # the kernel keeps the pages (keep_cache): nothing is pushed twice
        second = _status(mnt)
    assert first["prefilled"] == len(files) and first["reads"] == 0, first
    assert second["prefilled"] == len(files) and second["reads"] == 0, second
    assert second["errors"] == 0


def test_a_warm_cache_prefills_from_the_page_cache(s3_store_url: str, tmp_path: Path) -> None:
    files = small_files(240, 4, lo=2048, hi=16 * 1024)
    pv = make_packed_version(s3_store_url, files, pack_size=512 * 1024)
    cache = tmp_path / "cache"
    with cli_mount(pv.id, tmp_path / "mnt", s3_store_url, cache) as mnt:
        _epoch(pv, mnt)
        cold = _status(mnt)
    assert cold["store"]["gets"] > 0
    with cli_mount(pv.id, tmp_path / "mnt2", s3_store_url, cache) as mnt:
        _epoch(pv, mnt)
        c = _status(mnt)
    assert c["store"]["gets"] == 0, c
    # Opening a cached pack's file takes one cache lookup, which an open does not wait for (that
    # file is then READ as before); every later file of the pack is prefilled from the page cache.
    assert c["prefilled"] >= len(files) * 3 // 4, c
    assert c["prefilled"] + c["packed_reads"] >= len(files), c
    assert c["reads"] <= 2 * (len(files) - c["prefilled"]), c  # READs came for the others only


def test_a_damaged_small_file_still_opens_and_its_read_is_eio(
        file_store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("FSMOUNT_CACHE_LOCAL_STORE")
    files = small_files(60, 2)
    pv = make_packed_version(file_store_url, files, pack_size=8 * MiB)
    victim = sorted(files)[17]
    h, off, _ = pv.locator[victim]
    p = Path(file_store_url.removeprefix("file://")) / object_key(h)
    data = bytearray(p.read_bytes())
    data[off + 5] ^= 0x20
    os.chmod(p, 0o644)
    p.write_bytes(bytes(data))
    with cli_mount(pv.id, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        fd = os.open(mnt / victim, os.O_RDONLY)  # the open stands: only its bytes are bad
        try:
            with pytest.raises(OSError) as e:
                os.read(fd, len(files[victim]))
            assert e.value.errno == errno.EIO
        finally:
            os.close(fd)
        for name in sorted(files):
            if name != victim:
                assert (mnt / name).read_bytes() == files[name]
        c = _status(mnt)
    assert c["prefilled"] == len(files) - 1, c
    assert c["store"]["integrity_errors"] >= 1
