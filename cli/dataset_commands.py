"""Dataset lifecycle commands (create, add, remove, upload, close, sync, publish, tag, ...)."""

from __future__ import annotations

import math
import re
from pathlib import Path

import click

from fsmount import config
from fsmount.api import sync as api
from fsmount.api.dataset import Dataset
from fsmount.api.scan import folder_bytes
from fsmount.api.workspace import Workspace
from fsmount.config import parse_size
from fsmount.errors import UsageError

from .group import json_option, quiet_option, with_workspace
from .output import SAMPLE, change_report, echo_changes, emit, human_bytes, progress_bar

pack_threshold_option = click.option(
    "--pack-threshold", default=None,
    help="Pack files smaller than this into pack objects (default $FSMOUNT_PACK_THRESHOLD or 1MiB; 0: off).",
)
pack_size_option = click.option(
    "--pack-size", default=None,
    help="Fill each pack object up to this size (default $FSMOUNT_PACK_SIZE or 32MiB).",
)

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
@pack_threshold_option
@pack_size_option
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
    pack_threshold: str | None,
    pack_size: str | None,
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
        pack_threshold=pack_threshold,
        pack_size=pack_size,
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
@pack_threshold_option
@pack_size_option
@json_option
@quiet_option
@with_workspace
def upload(ws: Workspace, dataset_id: str | None, pack_threshold: str | None, pack_size: str | None,
           as_json: bool, quiet: bool) -> None:
    """Upload staged files (resumable: run again after a crash to upload only what is missing)."""
    ds = _draft(ws, dataset_id)
    with progress_bar(ds.staged_bytes(), "uploading", quiet or as_json) as bar:
        stats = ds.upload(progress=bar, pack_threshold=pack_threshold, pack_size=pack_size)
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
@pack_threshold_option
@pack_size_option
@json_option
@quiet_option
@with_workspace
def close(
    ws: Workspace, dataset_id: str | None, message: str, publish: bool, pack_threshold: str | None,
    pack_size: str | None, as_json: bool, quiet: bool
) -> None:
    """Upload what remains and finalize the draft (small files packed into pack objects)."""
    ds = _draft(ws, dataset_id)
    with progress_bar(ds.staged_bytes(), "uploading", quiet or as_json) as bar:
        rec = ds.finalize(message=message, publish=publish, progress=bar, pack_threshold=pack_threshold,
                          pack_size=pack_size)
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
@pack_threshold_option
@pack_size_option
@click.option("--list", "full", is_flag=True,
              help=f"List every changed path (default: counts, and the first {SAMPLE} of each kind).")
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
    pack_threshold: str | None,
    pack_size: str | None,
    full: bool,
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
            pack_threshold=pack_threshold,
            pack_size=pack_size,
        )

    report = change_report({"added": res.added, "modified": res.modified, "removed": res.removed}, full)

    def text() -> None:
        echo_changes(report)
        click.echo(
            f"{ds.id}: {len(res.added)} added, {len(res.modified)} modified, {len(res.removed)} removed"
        )

    emit({"id": ds.id, "state": ds.state, **report}, as_json, text)


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
@click.argument("ref", required=False)
@click.option("--force", is_flag=True, help="Delete even if other versions have it as parent.")
@click.option("--project", default=None, help="With --entire-dataset: the dataset's project.")
@click.option("--name", default=None, help="With --entire-dataset: the dataset's name.")
@click.option("--entire-dataset", is_flag=True, help="Delete every version of --project/--name.")
@json_option
@with_workspace
def delete(
    ws: Workspace, ref: str | None, force: bool, project: str | None, name: str | None,
    entire_dataset: bool, as_json: bool,
) -> None:
    """Delete a version, or a whole dataset (its data goes at the next gc)."""
    if entire_dataset:
        if ref is not None or not (project and name):
            raise UsageError("--entire-dataset takes --project and --name, not a REF")
        res = Dataset.delete_dataset(project, name, force=force, workspace=ws)
        n = res["unreachable_objects"]
        after = (
            f"gc may now remove {n} objects ({human_bytes(res['unreachable_bytes'])}) once older than"
            " its grace period" if n is not None else f"run 'fsmount gc --dry-run' later ({res['gc_note']})"
        )
        emit(res, as_json, f"deleted {len(res['deleted'])} versions of {project}/{name}; {after}")
        return
    if ref is None or project or name:
        raise UsageError("give a REF, or --project, --name and --entire-dataset")
    ds = Dataset.get(ref=ref, only_final=False, workspace=ws)
    ds.delete(force=force)
    emit({"id": ds.id, "deleted": True}, as_json, f"{ds.id} deleted")


@click.command()
@click.option("--grace", default="1h", show_default=True,
              help="Keep unreferenced objects younger than this (90s, 30m, 1h, 2d, 0): an upload in flight"
              " may not be referenced yet.")
@click.option("--dry-run", is_flag=True)
@click.option("--repack", is_flag=True, help="First rewrite packs that versions use only partly.")
@click.option("--repack-below", default=0.5, type=float, show_default=True,
              help="With --repack: rewrite packs of which less than this fraction is used.")
@pack_size_option
@json_option
@with_workspace
def gc(ws: Workspace, grace: str, dry_run: bool, repack: bool, repack_below: float, pack_size: str | None,
       as_json: bool) -> None:
    """Delete objects no version reaches (never while an upload or commit runs)."""
    seconds = _duration(grace)
    res = api.gc(ws, grace=seconds, dry_run=dry_run, repack=repack, repack_below=repack_below,
                 pack_size=config.pack_size(pack_size) if pack_size else None)
    verb = "would delete" if dry_run else "deleted"
    text = f"{verb} {res['deleted']} objects ({human_bytes(res['bytes_freed'])})"
    if res["kept_recent"]:
        text += (f"; kept {res['kept_recent']} unreferenced ones younger than the grace period ({grace}):"
                 " they go at a later gc, or now with --grace 0 when no upload or commit is running")
    if repack:
        text += (f"; {'would repack' if dry_run else 'repacked'} {res['packs_repacked']} packs"
                 f" into {res['packs_written']}, {res['versions_repointed']} versions repointed")
    emit(res | {"grace_seconds": seconds}, as_json, text)


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
