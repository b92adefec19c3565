"""Other users: the cache is private, and mode bits from the store never give a setuid or writable copy."""

from __future__ import annotations

import contextlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from fsmount.api.dataset import Dataset
from fsmount.api.local_copy import SPECIAL_BITS, copy_mode, materialise, remove_tree
from fsmount.cache.local_cache import ContentCache
from fsmount.commit.finalize import ChangeSet, finalize
from fsmount.commit.registry import read_state
from fsmount.errors import UsageError
from fsmount.format.tree_edit import walk_tree
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, run_json

NOBODY = 65534
pytestmark = pytest.mark.skipif(os.geteuid() != 0, reason="checks what root creates and what others can read")


def as_user(uid: int, fn: Callable[[], bool]) -> bool:
    """Run fn() in a forked child with uid/gid `uid`; its boolean result."""
    pid = os.fork()
    if pid == 0:  # pragma: no cover - the child
        code = 1
        try:
            os.setgroups([])
            os.setgid(uid)
            os.setuid(uid)
            code = 0 if fn() else 1
        finally:
            os._exit(code)
    _, status = os.waitpid(pid, 0)
    return os.waitstatus_to_exitcode(status) == 0


@contextlib.contextmanager
def open_folder() -> Iterator[Path]:
    """A folder every user can reach (pytest's tmp_path is under a 0700 folder, which would hide a leak)."""
    d = Path(tempfile.mkdtemp(prefix="fsmount-perm-", dir="/tmp"))
    os.chmod(d, 0o755)
    try:
        yield d
    finally:
        remove_tree(d)


def _readable_by_nobody(paths: list[Path]) -> list[Path]:
    found: list[Path] = []
    for p in paths:
        def try_read(p: Path = p) -> bool:
            try:
                with open(p, "rb") as f:
                    f.read(1)
                return True
            except OSError:
                return False
        if as_user(NOBODY, try_read):
            found.append(p)
    return found


# -- the cache --------------------------------------------------------------------------------


def test_the_cache_and_get_copies_are_private(file_store_url: str, tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    (src / "secret.txt").write_bytes(b"top secret " * 5000)  # > 32 KiB: a block file in the cache
    os.chmod(src / "secret.txt", 0o600)
    (src / "small.txt").write_bytes(b"small")
    run_cli("--store", file_store_url, "sync", "--project", "p", "--name", "n", "--folder", str(src), "-q")
    old = os.umask(0o022)
    try:
        with open_folder() as base:
            cache = base / "cache"
            copy = run_json("--store", file_store_url, "--cache-dir", str(cache), "get", "p/n")["path"]
            assert copy.startswith(str(cache / "copies"))
            files = [p for p in cache.rglob("*") if p.is_file()]
            assert any(p.stat().st_size >= 50_000 for p in files), "the block was not cached as a file"
            for d in (cache, cache / "copies", *(cache / f"{i:03d}" for i in range(8))):
                assert stat.S_IMODE(d.stat().st_mode) == 0o700, d
            assert _readable_by_nobody(files) == []
            # The same files, had the folders been open: the test can tell.
            os.chmod(cache, 0o755)
            for d in cache.rglob("*"):
                if d.is_dir():
                    os.chmod(d, 0o755)
            assert _readable_by_nobody(files)
    finally:
        os.umask(old)


def test_an_open_cache_of_ours_is_tightened(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "003").mkdir(parents=True)
    (cache / "copies").mkdir()
    for d in (cache, cache / "003", cache / "copies"):
        os.chmod(d, 0o777)
    os.chmod(cache / "003", 0o2777)
    ContentCache(cache).close()
    for d in (cache, cache / "003", cache / "copies", cache / "007"):
        assert stat.S_IMODE(d.stat().st_mode) == 0o700, d


def test_a_shared_or_mixed_folder_is_not_tightened_but_the_cache_inside_is(tmp_path: Path) -> None:
    shared = tmp_path / "tmp"
    shared.mkdir()
    os.chmod(shared, 0o1777)  # like /tmp
    mixed = tmp_path / "homes"
    mixed.mkdir()
    (mixed / "alice").mkdir()
    os.chmod(mixed, 0o755)  # like /home: chmod 700 would lock everybody out
    for folder, mode in ((shared, 0o1777), (mixed, 0o755)):
        ContentCache(folder).close()
        assert stat.S_IMODE(folder.stat().st_mode) == mode
        for sub in ("copies", "000", "007"):
            assert stat.S_IMODE((folder / sub).stat().st_mode) == 0o700


def test_a_cache_subfolder_of_another_user_is_refused(tmp_path: Path) -> None:
    cache = tmp_path / "cache"
    (cache / "000").mkdir(parents=True)
    os.chown(cache / "000", NOBODY, NOBODY)
    with pytest.raises(UsageError, match=f"belongs to uid {NOBODY}"):
        ContentCache(cache)
    os.chown(cache / "000", 0, 0)
    shutil.rmtree(cache / "000")
    (cache / "000").symlink_to(tmp_path)
    before = stat.S_IMODE(tmp_path.stat().st_mode)
    with pytest.raises(UsageError):
        ContentCache(cache)
    assert stat.S_IMODE(tmp_path.stat().st_mode) == before  # the link's target is not touched


# -- mode bits from the store -----------------------------------------------------------------

STORED = {  # path -> the mode the store's tree says
    "bin": 0o2755,
    "bin/suid": 0o4755,
    "bin/sgid": 0o2711,
    "bin/sticky": 0o1644,
    "tmp": 0o1777,
    "open": 0o777,
    "open/f": 0o666,
    "locked": 0o500,
    "empty-open": 0o777,
}


def _hostile_version(store: str, tmp_path: Path) -> str:
    """A version whose tree says setuid, setgid, sticky and world-writable, written by the real writer."""
    src = tmp_path / "src"
    for d in ("bin", "tmp", "open", "locked", "empty-open"):
        (src / d).mkdir(parents=True)
    for f in ("bin/suid", "bin/sgid", "bin/sticky", "open/f", "tmp/t", "locked/l"):
        (src / f).write_text(f)
    for p, mode in STORED.items():
        if not (src / p).is_dir():
            os.chmod(src / p, mode)
    v1 = Dataset.create("hostile", "perm", store=store)
    v1.add_files(src)
    v1.finalize()
    # Directory modes through the commit path (the overlay commit's directory attributes).
    v2 = Dataset.create("hostile", "perm", parent_datasets=[v1.id], store=store)
    ws = v2.workspace
    mtime = 1_700_000_000 * 10**9
    changes = ChangeSet(dir_attrs={p: (m, mtime) for p, m in STORED.items() if (src / p).is_dir()})
    finalize(ws.store, ws.reader, read_state(ws.store, v2.id), changes, block_size=v2.block_size)
    v2.refresh()
    stored = {p: e.mode for p, e in walk_tree(ws.reader.tree, v2.record.root)}
    assert {p: stored[p] for p in STORED} == STORED, "the store does not say what the test needs"
    return v2.id


def _modes(root: Path) -> dict[str, int]:
    return {str(p.relative_to(root)): stat.S_IMODE(p.lstat().st_mode) for p in root.rglob("*")}


def test_get_strips_special_bits_and_is_never_writable(file_store_url: str, tmp_path: Path) -> None:
    vid = _hostile_version(file_store_url, tmp_path)
    copy = Path(run_json("--store", file_store_url, "get", vid)["path"])
    modes = _modes(copy)
    assert {p: m for p, m in modes.items() if m & SPECIAL_BITS} == {}
    assert {p: m for p, m in modes.items() if m & 0o222} == {}
    assert stat.S_IMODE(copy.stat().st_mode) == 0o555
    assert modes["bin/suid"] == 0o555 and modes["open/f"] == 0o444 and modes["open"] == 0o555
    assert modes["locked"] == 0o500 and modes["tmp"] == 0o555 and modes["bin/sgid"] == 0o511
    for p, m in STORED.items():
        assert modes[p] == copy_mode(m, is_dir=(copy / p).is_dir(), read_only=True), p


def test_get_copy_strips_special_bits(file_store_url: str, tmp_path: Path) -> None:
    vid = _hostile_version(file_store_url, tmp_path)
    target = tmp_path / "mutable"
    run_cli("--store", file_store_url, "get", vid, "--copy", str(target))
    modes = _modes(target)
    assert {p: m for p, m in modes.items() if m & SPECIAL_BITS} == {}
    assert modes["bin/suid"] == 0o755 and modes["bin/sticky"] == 0o644 and modes["bin"] == 0o755
    assert modes["open"] == 0o775 and modes["tmp"] == 0o775 and modes["locked"] == 0o700  # no o+w
    # Copying again over it (--overwrite) works, read-only folders or not.
    run_cli("--store", file_store_url, "get", vid, "--copy", str(target), "--overwrite")
    assert _modes(target) == modes


def test_special_bits_only_when_asked_for(file_store_url: str, tmp_path: Path) -> None:
    vid = _hostile_version(file_store_url, tmp_path)
    ds = Dataset.get(vid, store=file_store_url)
    target = tmp_path / "asked"
    materialise(ds.workspace.reader, ds.record.root, target, read_only=False, preserve_special_bits=True)
    modes = _modes(target)
    assert modes["bin/suid"] == 0o4755 and modes["bin"] == 0o2755 and modes["tmp"] == 0o1777


def test_a_read_only_copy_can_be_removed_by_its_owner(file_store_url: str, tmp_path: Path) -> None:
    vid = _hostile_version(file_store_url, tmp_path)
    ds = Dataset.get(vid, store=file_store_url)
    with open_folder() as base:
        os.chown(base, NOBODY, NOBODY)
        target = base / "ro"
        materialise(ds.workspace.reader, ds.record.root, target, read_only=True)
        for p in [target, *target.rglob("*")]:
            os.chown(p, NOBODY, NOBODY, follow_symlinks=False)

        def plain_rmtree() -> bool:
            shutil.rmtree(target)
            return True

        def our_remove_tree() -> bool:
            remove_tree(target)
            return not target.exists()

        assert not as_user(NOBODY, plain_rmtree)  # the owner cannot, with shutil.rmtree
        assert target.exists()
        assert as_user(NOBODY, our_remove_tree)


def test_a_mount_shows_no_special_bits_and_is_nosuid(
    file_store_url: str, tmp_path: Path, require_fuse: None
) -> None:
    vid = _hostile_version(file_store_url, tmp_path)
    with cli_mount(vid, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        modes = {str(p.relative_to(mnt)): stat.S_IMODE(p.lstat().st_mode) for p in mnt.rglob("*")}
        opts = next(ln.split()[3] for ln in Path("/proc/mounts").read_text().splitlines()
                    if ln.split()[1] == str(mnt))
    assert {p: m for p, m in modes.items() if m & SPECIAL_BITS} == {}
    assert "nosuid" in opts.split(",") and "nodev" in opts.split(",")


def test_copy_mode_table() -> None:
    assert copy_mode(0o4755, is_dir=False, read_only=True) == 0o555
    assert copy_mode(0o4755, is_dir=False, read_only=False) == 0o755
    assert copy_mode(0o1777, is_dir=True, read_only=True) == 0o555
    assert copy_mode(0o000, is_dir=True, read_only=True) == 0o500
    assert copy_mode(0o000, is_dir=True, read_only=False) == 0o700
    assert copy_mode(0o1777, is_dir=True, read_only=False) == 0o775  # not writable by every user
    assert copy_mode(0o666, is_dir=False, read_only=False) == 0o664
    assert copy_mode(0o2750, is_dir=True, read_only=False, preserve_special_bits=True) == 0o2750


def test_local_state_folders_are_private(file_store_url: str, tmp_path: Path, isolated_env: Path) -> None:
    from fsmount.fs.control import runtime_dir
    from fsmount.overlay.upper import UpperLayer

    old = os.umask(0o022)
    try:
        vid = run_json("--store", file_store_url, "create", "--project", "p", "--name", "n")["id"]
        home = Path(os.environ["XDG_DATA_HOME"]) / "fsmount"
        run_dir = Path(os.environ["FSMOUNT_RUNTIME_DIR"])
        run_dir.mkdir(mode=0o755)
        os.chmod(run_dir, 0o755)
        upper = UpperLayer(tmp_path / "overlay")
        upper.close()
        overlay = tmp_path / "overlay"
        folders = [home, home / "drafts" / vid, runtime_dir(), overlay, overlay / "data"]
        modes = {str(d): stat.S_IMODE(d.stat().st_mode) for d in folders}
    finally:
        os.umask(old)
    assert modes == {str(d): 0o700 for d in folders}
