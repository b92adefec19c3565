"""One-call jobs over a workspace: sync a folder into a new version (clearml-data sync) and gc."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path

from fsmount.api.dataset import Dataset
from fsmount.api.scan import SyncResult
from fsmount.api.workspace import Workspace
from fsmount.commit import gc as gc_mod
from fsmount.commit import registry
from fsmount.errors import UsageError

__all__ = ["SyncResult", "gc", "sync"]

log = logging.getLogger(__name__)

Progress = Callable[[int], None]

def sync(
    folder: str | os.PathLike[str],
    *,
    dataset_id: str | None = None,
    project: str | None = None,
    name: str | None = None,
    parents: list[str] | None = None,
    version: str | None = None,
    tags: list[str] | None = None,
    message: str = "",
    publish: bool = False,
    block_size: int | None = None,
    workspace: Workspace | None = None,
    progress: Progress | None = None,
    pack_threshold: str | int | None = None,
    pack_size: str | int | None = None,
) -> tuple[Dataset, SyncResult]:
    """create + compare + upload + finalize in one go (clearml-data sync). Small files are packed
    (`pack_threshold`, `pack_size`, else the configuration's).

    With project and name but no parents, the newest final version of that dataset (if
    any) becomes the parent, so repeated syncs of a folder build a lineage.
    """
    ws = workspace or Workspace()
    if not Path(folder).is_dir():
        raise UsageError(f"{folder}: not a folder")
    if dataset_id:
        ds = Dataset(ws, registry.resolve(ws.store, dataset_id, require_final=False))
    else:
        if not (project and name):
            raise UsageError("sync needs --id, or --project and --name")
        if parents is None:
            newest = registry.newest(
                registry.select(registry.list_states(ws.store), project, name, final_only=True)
            )
            parents = [newest.id] if newest else []
        ds = Dataset.create(name, project, version, parents, tags, workspace=ws, block_size=block_size,
                            pack_threshold=pack_threshold, pack_size=pack_size)
    try:
        result = ds.sync_folder(folder, progress=None)
        ds.finalize(message=message, publish=publish, progress=progress, pack_threshold=pack_threshold,
                    pack_size=pack_size)
    except BaseException:
        log.info("sync of %s interrupted; 'fsmount close --id %s' finishes it", folder, ds.id)
        raise
    return ds, result


def gc(
    workspace: Workspace, grace: float = 3600.0, dry_run: bool = False, repack: bool = False,
    repack_below: float = 0.5, pack_size: int | None = None,
) -> dict[str, int]:
    """Delete objects no version reaches. Holds the gc lock, so no upload or commit runs meanwhile.
    With `repack`, packs less than `repack_below` used are rewritten first (docs/FORMAT.md §10)."""
    return gc_mod.gc(workspace.store, workspace.reader, grace=grace, dry_run=dry_run, repack=repack,
                     repack_below=repack_below, pack_size=pack_size)
