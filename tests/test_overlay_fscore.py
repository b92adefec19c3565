"""WritableFS without FUSE: inode numbers across renames and unlinks, open handles, commit, discard."""

from __future__ import annotations

import errno
import logging
import os
from pathlib import Path

import pyfuse3
import pytest
import trio

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.errors import FsmountError
from fsmount.fs.adapter_rw import WritableOperations
from fsmount.fs.inodes import ROOT_INO
from fsmount.fs.writable import WritableFS
from fsmount.overlay.upper import UpperLayer
from tests.helpers import hash_tree, write_tree


@pytest.fixture
def wfs(tmp_path: Path, file_store_url: str) -> WritableFS:
    ws = Workspace(file_store_url)
    src = write_tree(tmp_path / "src", {"a.txt": b"hello", "d/x": b"x" * 10, "d/e/y": b"yy"})
    ds = Dataset.create("n", "p", workspace=ws)
    ds.add_files(src)
    ds.finalize()
    upper = UpperLayer(tmp_path / "ov")
    upper.bind(ds.id, ds.record.root)
    return WritableFS(ws, ds.record, upper)


def run(fs: WritableFS, fn) -> None:  # type: ignore[no-untyped-def]
    async def main() -> None:
        async with trio.open_nursery() as n:
            fs.start(n)
            await fn()
            n.cancel_scope.cancel()

    trio.run(main)


def test_inodes_follow_renames_and_handles_see_copy_up(wfs: WritableFS) -> None:
    fs = wfs

    async def go() -> None:
        a = await fs.lookup(ROOT_INO, "a.txt")
        reader = await fs.open(a.ino, os.O_RDONLY)
        assert await fs.read(reader, 0, 100) == b"hello"  # through the block reader
        writer = await fs.open(a.ino, os.O_RDWR)
        await fs.write(writer, 5, b" world")  # copy-up: the reader sees it too
        assert await fs.read(reader, 0, 100) == b"hello world"
        d = await fs.lookup(ROOT_INO, "d")
        e = await fs.lookup(d.ino, "e")
        await fs.rename(ROOT_INO, "d", ROOT_INO, "z", 0)
        assert (await fs.lookup(ROOT_INO, "z")).ino == d.ino
        assert (await fs.lookup(d.ino, "e")).ino == e.ino
        y = await fs.lookup(e.ino, "y")
        fh = await fs.open(y.ino, os.O_RDONLY)
        assert await fs.read(fh, 0, 10) == b"yy"
        fs.release(fh)
        with pytest.raises(FsmountError) as err:
            await fs.lookup(ROOT_INO, "d")
        assert err.value.errno == errno.ENOENT
        await fs.unlink(ROOT_INO, "a.txt")  # unlinked while open: the handles keep working
        await fs.write(writer, 0, b"H")
        assert await fs.read(reader, 0, 100) == b"Hello world"
        assert (await fs.getattr(a.ino)).size == 11
        fs.release(reader)
        fs.release(writer)
        with pytest.raises(FsmountError):
            await fs.getattr(a.ino)
        c, attr = await fs.create(ROOT_INO, "new", 0o644, os.O_WRONLY)
        assert await fs.write(c, 0, b"new!") == 4
        assert (await fs.getattr(attr.ino)).size == 4
        fs.release(c)
        dh = await fs.opendir(ROOT_INO)
        assert [name async for name, _, _ in fs.readdir(dh, 0)] == ["new", "z"]
        fs.releasedir(dh)

    run(fs, go)


def test_commit_with_a_file_open_then_discard(wfs: WritableFS, tmp_path: Path) -> None:
    fs = wfs

    async def go() -> None:
        base = fs.record.id
        fh, _ = await fs.create(ROOT_INO, "open.txt", 0o644, os.O_RDWR)
        await fs.write(fh, 0, b"first")
        result = await fs.commit("one", tags=["t"])
        assert result.record is not None and result.record.parents == (base,)
        assert fs.record.id == result.record.id and fs.pending_count() == 0
        await fs.write(fh, 5, b" second")  # the handle keeps working after the commit
        assert await fs.read(fh, 0, 100) == b"first second"
        assert fs.pending_count() == 1
        n, gone, _ = await fs.discard()
        assert n == 1 and not gone
        assert await fs.read(fh, 0, 100) == b"first"  # back to the committed bytes
        fs.release(fh)
        assert (await fs.commit()).record is None

    run(fs, go)
    child = Dataset.get(fs.record.id, workspace=fs.ws)
    assert hash_tree(Path(child.get_local_copy()))["open.txt"]


def test_errors_keep_their_errno(wfs: WritableFS) -> None:
    fs = wfs

    async def go() -> None:
        for call, err in (
            (fs.mkdir(ROOT_INO, "d", 0o755), errno.EEXIST),
            (fs.rmdir(ROOT_INO, "d"), errno.ENOTEMPTY),
            (fs.unlink(ROOT_INO, "d"), errno.EISDIR),
            (fs.rename(ROOT_INO, "a.txt", ROOT_INO, "d", 0), errno.EISDIR),
            (fs.rename(ROOT_INO, "a.txt", ROOT_INO, "b", 2), errno.EINVAL),
            (fs.link(ROOT_INO, ROOT_INO, "h"), errno.EPERM),
        ):
            with pytest.raises(FsmountError) as e:
                await call
            assert e.value.errno == err

    run(fs, go)


def test_ordinary_error_replies_are_logged_at_debug_and_not_counted(
        wfs: WritableFS, caplog: pytest.LogCaptureFixture) -> None:
    ops = WritableOperations(wfs)
    caplog.set_level(logging.DEBUG, logger="fsmount")
    replies: list[int] = []

    async def fails(call: object) -> None:
        with pytest.raises(pyfuse3.FUSEError) as e:
            await call  # type: ignore[misc]
        replies.append(e.value.errno)

    async def go() -> None:
        await fails(ops.rmdir(ROOT_INO, b"d", None))
        await fails(ops.lookup(ROOT_INO, b"missing", None))
        await fails(ops.mkdir(ROOT_INO, b"d", 0o755, None))
        await fails(ops.unlink(ROOT_INO, b"d", None))
        await fails(ops.rmdir(ROOT_INO, b"a.txt", None))
        d = await wfs.lookup(ROOT_INO, "d")
        await fails(ops.rename(ROOT_INO, b"d", d.ino, b"inside", 0, None))
        await fails(ops.link(d.ino, ROOT_INO, b"hard", None))  # a directory: EPERM
        await fails(ops.open(d.ino, os.O_RDONLY, None))

    run(wfs, go)
    assert replies == [errno.ENOTEMPTY, errno.ENOENT, errno.EEXIST, errno.EISDIR, errno.ENOTDIR, errno.EINVAL,
                       errno.EPERM, errno.EISDIR]
    assert not [r for r in caplog.records if r.levelno >= logging.WARNING]
    assert any(r.levelno == logging.DEBUG and r.getMessage().startswith("rmdir") for r in caplog.records)
    c = wfs.counters()
    assert (c["errors"], c["metadata_errors"], c["last_error"]) == (0, 0, "")
