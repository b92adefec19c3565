"""A paged-in cached pack is checked by the CRC32C of its pages: ranges are right, damage is caught."""

from __future__ import annotations

import os
import random
from collections.abc import Iterator
from pathlib import Path

import diskcache
import pytest

from fsmount.cache.local_cache import CHECK_PAGE, ContentCache, CorruptEntry
from fsmount.format.hashing import digest
from tests.test_cache_integrity import cache_row, flip_cached_byte

SIZE = 7 * CHECK_PAGE + 1234  # a short last page


@pytest.fixture
def pack(tmp_path: Path) -> Iterator[tuple[ContentCache, bytes, bytes]]:
    data = random.Random(5).randbytes(SIZE)
    cache = ContentCache(tmp_path / "cache")
    cache.put(digest(data), data)
    yield cache, digest(data), data
    cache.close()


def _ranges() -> list[tuple[int, int]]:
    r = random.Random(9)
    edges = [(0, 1), (0, CHECK_PAGE), (CHECK_PAGE - 1, 2), (CHECK_PAGE, CHECK_PAGE), (SIZE - 1, 1),
             (SIZE - 1234, 1234), (SIZE - 10, 100), (0, SIZE), (5, SIZE - 10)]
    return edges + [(r.randrange(SIZE), r.randint(1, 3 * CHECK_PAGE)) for _ in range(40)]


@pytest.mark.parametrize("nowait", [False, True])
def test_ranges_of_a_paged_in_pack_are_checked_by_page_and_right(
        pack: tuple[ContentCache, bytes, bytes], nowait: bool) -> None:
    cache, h, data = pack
    before = cache.read_range(h, 100, 50)
    assert before is not None and before[1] is False  # not paged in: the caller checks the range
    assert cache.page_in(h)
    for off, n in _ranges():
        got = cache.read_range(h, off, n, nowait)
        assert got is not None
        piece, checked = got
        assert checked and bytes(piece) == data[off:off + n], (off, n)


def test_a_damaged_page_is_caught_after_the_page_in_and_the_pack_dropped(
        pack: tuple[ContentCache, bytes, bytes]) -> None:
    cache, h, data = pack
    assert cache.page_in(h)
    flip_cached_byte(cache.directory, h, at=3 * CHECK_PAGE + 77)  # through the page cache, as a bad disk
    ok = cache.read_range(h, 0, CHECK_PAGE)  # a range on good pages still passes
    assert ok is not None and bytes(ok[0]) == data[:CHECK_PAGE]
    with pytest.raises(CorruptEntry):
        cache.read_range(h, 3 * CHECK_PAGE + 70, 20, True)
    assert h not in cache and cache.read_range(h, 0, 10) is None


def test_a_damaged_pack_fails_its_page_in_and_is_dropped(pack: tuple[ContentCache, bytes, bytes]) -> None:
    cache, h, _ = pack
    flip_cached_byte(cache.directory, h, at=SIZE - 3)
    with pytest.raises(CorruptEntry):
        cache.page_in(h)
    assert h not in cache


def test_a_pack_file_of_another_size_is_not_checked_by_the_old_pages(
        pack: tuple[ContentCache, bytes, bytes]) -> None:
    cache, h, _ = pack
    assert cache.page_in(h)
    db, name = cache_row(cache.directory, h)
    assert name is not None
    cache._forget_file(h)  # the next read opens the file again and sees its new size
    os.truncate(db.parent / name, SIZE - CHECK_PAGE)
    got = cache.read_range(h, 0, 100)
    assert got is not None and got[1] is False  # the caller checks it against the file's SHA-256


def test_an_entry_without_a_checksum_keeps_no_pages(tmp_path: Path) -> None:
    """An entry older than checksums has nothing to check the page-in against: no page table."""
    data = random.Random(6).randbytes(SIZE)
    raw = diskcache.FanoutCache(str(tmp_path / "cache"), shards=8)
    raw.set(digest(data), data)
    raw.close()
    cache = ContentCache(tmp_path / "cache")
    try:
        assert cache.page_in(digest(data))
        got = cache.read_range(digest(data), 10, 10)
        assert got is not None and got[1] is False and bytes(got[0]) == data[10:20]
    finally:
        cache.close()
