"""Control-socket operations of a writable mount: commit, diff (pending changes), discard."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from typing import Any

import pyfuse3
import trio

from fsmount.fs.control import Handler
from fsmount.fs.writable import WritableFS

log = logging.getLogger(__name__)


def overlay_handlers(fs: WritableFS, mountpoint: str, moved: Callable[[], None]) -> dict[str, Handler]:
    """Handlers for `control.serve`; `moved` runs after a commit put the mount on a new version."""

    async def commit(req: dict[str, Any]) -> dict[str, Any]:
        parent = fs.record.id
        result = await fs.commit(message=str(req.get("message") or ""), version=req.get("version"),
                                 tags=[str(t) for t in req.get("tags") or []],
                                 publish=bool(req.get("publish")))
        rec = result.record
        if rec is None:
            return {"id": None, "parent": parent}
        moved()
        log.info("committed %s as %s (parent %s)", mountpoint, rec.id, rec.parents)
        return {"id": rec.id, "version": rec.version, "parent": rec.parents[0] if rec.parents else None,
                "files": rec.files, "bytes": rec.nbytes, "blocks_uploaded": result.stats.blocks_uploaded,
                "bytes_uploaded": result.stats.bytes_uploaded, "resumed": result.resumed}

    async def diff(req: dict[str, Any]) -> dict[str, Any]:
        p = await fs.pending()
        return {"mountpoint": mountpoint, "version": fs.record.id, "added": p.added,
                "modified": p.modified, "removed": p.removed}

    async def discard(req: dict[str, Any]) -> dict[str, Any]:
        n, gone, changed = await fs.discard()
        await forget_in_kernel(gone, changed)
        log.info("discarded %d pending change(s) of %s", n, mountpoint)
        return {"discarded": n}

    return {"commit": commit, "diff": diff, "discard": discard}


async def forget_in_kernel(gone: list[tuple[int, str]], changed: list[int]) -> None:
    """Drop the kernel's cached names and attributes/pages that a discard made wrong."""
    for parent, name in gone:
        try:
            pyfuse3.invalidate_entry_async(parent, os.fsencode(name), ignore_enoent=True)
        except OSError as e:
            log.debug("invalidate_entry %d/%s: %s", parent, name, e)

    def inodes() -> None:
        for ino in changed:
            try:
                pyfuse3.invalidate_inode(ino)
            except OSError as e:  # not cached by the kernel: nothing to drop
                log.debug("invalidate_inode %d: %s", ino, e)

    await trio.to_thread.run_sync(inodes)
