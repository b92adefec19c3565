"""Dataset lifecycle commands (create, add, remove, upload, close, sync, publish, tag, ...)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from fsmount.api import dataset as api
from fsmount.api.dataset import Dataset
from fsmount.api.scan import folder_bytes
from fsmount.api.workspace import Workspace
from fsmount.config import parse_size
from fsmount.errors import UsageError

from .group import json_option, quiet_option, with_workspace
from .output import emit, human_bytes, progress_bar

id_option = click.option(
    "--id", "dataset_id", default=None, help="Dataset version id (default: the current draft)."
)


def _draft(ws: Workspace, dataset_id: str | None) -> Dataset:
    if dataset_id:
        return Dataset.get(ref=dataset_id, only_final=False, workspace=ws)
    return Dataset.current_draft(workspace=ws)


@click.command()
@click.option("--project", required=True, help="Project the dataset belongs to.")
@click.option("--name", required=True, help="Dataset name.")
@click.option("--version", "version", default=None, help="Version string (default: next after the newest).")
@click.option("--parent", "parents", multiple=True, help="Parent REF; repeat for several (later wins).")
@click.option("--tag", "tags", multiple=True, help="Tag; repeat for several.")
@click.option("--description", default=None)
@click.option("--block-size", default=None, help="Block size, e.g. 4MiB (default: the parent's, else 4MiB).")
@json_option
@with_workspace
def create(
    ws: Workspace,
    project: str,
    name: str,
    version: str | None,
    parents: tuple[str, ...],
    tags: tuple[str, ...],
    description: str | None,
    block_size: str | None,
    as_json: bool,
) -> None:
    """Create a draft version and make it the current draft."""
    ds = Dataset.create(
        name,
        project,
        version,
        list(parents),
        list(tags),
        description,
        block_size=parse_size(block_size) if block_size else None,
        workspace=ws,
    )
    emit(
        {
            "id": ds.id,
            "project": ds.project,
            "name": ds.name,
            "version": ds.version,
            "parents": ds.parents,
            "state": ds.state,
        },
        as_json,
        ds.id,
    )


@click.command()
@click.argument("paths", nargs=-1)
@id_option
@click.option("--dataset-folder", default=None, help="Where in the dataset to put them (default: the root).")
@click.option("--wildcard", default=None, help="Only files whose name matches this glob.")
@click.option("--non-recursive", is_flag=True, help="Only the top level of a folder.")
@click.option("--links", multiple=True, metavar="URL",
              help="External files that stay where they are (s3://, file://, https://...); repeatable.")
@click.option("--hash", "hash_links", is_flag=True, help="Read each --links file once to record its SHA-256.")
@json_option
@with_workspace
def add(
    ws: Workspace,
    paths: tuple[str, ...],
    dataset_id: str | None,
    dataset_folder: str | None,
    wildcard: str | None,
    non_recursive: bool,
    links: tuple[str, ...],
    hash_links: bool,
    as_json: bool,
) -> None:
    """Stage files and folders (a folder's contents go under the dataset root or --dataset-folder)."""
    if not paths and not links:
        raise UsageError("give PATHS to add, or --links URL")
    for p in paths:
        if not Path(p).exists() and not Path(p).is_symlink():
            raise UsageError(f"{p}: no such file or directory")
    ds = _draft(ws, dataset_id)
    n = ds.add_external_files(list(links), wildcard, dataset_folder, not non_recursive,
                              hash_content=hash_links) if links else 0  # first: a bad link stages nothing
    n += sum(
        ds.add_files(p, wildcard=wildcard, dataset_path=dataset_folder, recursive=not non_recursive)
        for p in paths
    )
    emit({"id": ds.id, "staged": n}, as_json, f"{n} entries staged in {ds.id}")


@click.command()
@click.argument("patterns", nargs=-1, required=True)
@id_option
@json_option
@with_workspace
def remove(ws: Workspace, patterns: tuple[str, ...], dataset_id: str | None, as_json: bool) -> None:
    """Remove paths or globs from the draft, whether staged or inherited from parents."""
    ds = _draft(ws, dataset_id)
    n = sum(ds.remove_files(p) for p in patterns)
    emit({"id": ds.id, "removed": n}, as_json, f"{n} paths removed from {ds.id}")


@click.command()
@id_option
@json_option
@quiet_option
@with_workspace
def upload(ws: Workspace, dataset_id: str | None, as_json: bool, quiet: bool) -> None:
    """Upload staged files (resumable: run again after a crash to upload only what is missing)."""
    ds = _draft(ws, dataset_id)
    with progress_bar(ds.staged_bytes(), "uploading", quiet or as_json) as bar:
        stats = ds.upload(progress=bar)
    emit(
        {"id": ds.id, **stats.__dict__},
        as_json,
        f"uploaded {stats.blocks_uploaded} blocks ({human_bytes(stats.bytes_uploaded)}),"
        f" {stats.blocks_deduplicated} already stored",
    )


@click.command()
@id_option
@click.option("-m", "--message", default="", help="What this version changes.")
@click.option("--publish", is_flag=True, help="Publish right away.")
@json_option
@quiet_option
@with_workspace
def close(
    ws: Workspace, dataset_id: str | None, message: str, publish: bool, as_json: bool, quiet: bool
) -> None:
    """Upload what remains and finalize the draft."""
    ds = _draft(ws, dataset_id)
    with progress_bar(ds.staged_bytes(), "uploading", quiet or as_json) as bar:
        rec = ds.finalize(message=message, publish=publish, progress=bar)
    emit(
        {"id": ds.id, "state": ds.state, "files": rec.files, "bytes": rec.nbytes},
        as_json,
        f"{ds.id} is {ds.state}: {rec.files} files, {human_bytes(rec.nbytes)}",
    )


@click.command()
@click.option("--folder", required=True, type=click.Path(file_okay=False), help="Folder to sync from.")
@id_option
@click.option("--project", default=None)
@click.option("--name", default=None)
@click.option(
    "--parent",
    "parents",
    multiple=True,
    help="Parent REF (default: the newest final version of PROJECT/NAME).",
)
@click.option("--version", "version", default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("-m", "--message", default="")
@click.option("--publish", is_flag=True)
@click.option("--block-size", default=None)
@json_option
@quiet_option
@with_workspace
def sync(
    ws: Workspace,
    folder: str,
    dataset_id: str | None,
    project: str | None,
    name: str | None,
    parents: tuple[str, ...],
    version: str | None,
    tags: tuple[str, ...],
    message: str,
    publish: bool,
    block_size: str | None,
    as_json: bool,
    quiet: bool,
) -> None:
    """Create a version equal to FOLDER: compare with the parent, upload changes, finalize."""
    with progress_bar(folder_bytes(folder), "syncing", quiet or as_json) as bar:
        ds, res = api.sync(
            folder,
            dataset_id=dataset_id,
            project=project,
            name=name,
            parents=list(parents) if parents else None,
            version=version,
            tags=list(tags),
            message=message,
            publish=publish,
            block_size=parse_size(block_size) if block_size else None,
            workspace=ws,
            progress=bar,
        )

    def text() -> None:
        for kind, paths in (("added", res.added), ("modified", res.modified), ("removed", res.removed)):
            for p in paths:
                click.echo(f"{kind[0].upper()} {p}")
        click.echo(
            f"{ds.id}: {len(res.added)} added, {len(res.modified)} modified, {len(res.removed)} removed"
        )

    emit(
        {
            "id": ds.id,
            "state": ds.state,
            "added": res.added,
            "modified": res.modified,
            "removed": res.removed,
        },
        as_json,
        text,
    )


@click.command()
@click.argument("ref")
@json_option
@with_workspace
def publish(ws: Workspace, ref: str, as_json: bool) -> None:
    """Publish a final version."""
    ds = Dataset.get(ref=ref, workspace=ws)
    ds.publish()
    emit({"id": ds.id, "state": ds.state}, as_json, f"{ds.id} published")


@click.command()
@click.argument("ref")
@json_option
@with_workspace
def abort(ws: Workspace, ref: str, as_json: bool) -> None:
    """Abandon a draft (its state becomes aborted)."""
    ds = Dataset.get(ref=ref, only_final=False, workspace=ws)
    ds.abort()
    emit({"id": ds.id, "state": ds.state}, as_json, f"{ds.id} aborted")


@click.command()
@click.argument("ref")
@click.option("--add", "to_add", multiple=True, help="Tag to add; repeatable.")
@click.option("--remove", "to_remove", multiple=True, help="Tag to remove; repeatable.")
@json_option
@with_workspace
def tag(ws: Workspace, ref: str, to_add: tuple[str, ...], to_remove: tuple[str, ...], as_json: bool) -> None:
    """Add or remove tags (safe against concurrent changes from other machines)."""
    if not to_add and not to_remove:
        raise UsageError("give --add TAG or --remove TAG")
    ds = Dataset.get(ref=ref, only_final=False, workspace=ws)
    if to_add:
        ds.add_tags(list(to_add))
    if to_remove:
        ds.remove_tags(list(to_remove))
    emit(
        {"id": ds.id, "tags": sorted(ds.tags)}, as_json, f"{ds.id}: tags {', '.join(sorted(ds.tags)) or '-'}"
    )


@click.command()
@click.argument("ref")
@click.option("--force", is_flag=True, help="Delete even if other versions have it as parent.")
@json_option
@with_workspace
def delete(ws: Workspace, ref: str, force: bool, as_json: bool) -> None:
    """Delete a version (its data goes at the next gc)."""
    ds = Dataset.get(ref=ref, only_final=False, workspace=ws)
    ds.delete(force=force)
    emit({"id": ds.id, "deleted": True}, as_json, f"{ds.id} deleted")


@click.command()
@click.option("--grace", default="1h", help="Keep unreferenced objects younger than this (e.g. 1h, 0).")
@click.option("--dry-run", is_flag=True)
@json_option
@with_workspace
def gc(ws: Workspace, grace: str, dry_run: bool, as_json: bool) -> None:
    """Delete objects no version reaches (never while an upload or commit runs)."""
    seconds = _duration(grace)
    res = api.gc(ws, grace=seconds, dry_run=dry_run)
    verb = "would delete" if dry_run else "deleted"
    emit(
        res,
        as_json,
        f"{verb} {res['deleted']} objects ({human_bytes(res['bytes_freed'])}),"
        f" kept {res['kept_recent']} recent unreferenced ones",
    )


_DURATION = re.compile(r"(\d+(?:\.\d+)?)([smhd]?)")
_UNITS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def _duration(text: str) -> float:
    """A duration: a number of seconds, or with a unit s, m, h or d (90s, 30m, 1h, 2d); finite, >= 0."""
    m = _DURATION.fullmatch(text.strip().lower())
    seconds = float(m.group(1)) * _UNITS[m.group(2)] if m else math.nan
    if not math.isfinite(seconds):
        raise UsageError(f"invalid duration {text!r}: use a number of seconds or e.g. 90s, 30m, 1h, 2d")
    return seconds


COMMANDS = [
    create,
    add,
    remove,
    upload,
    close,
    sync,
    publish,
    abort,
    tag,
    delete,
    gc,
]
