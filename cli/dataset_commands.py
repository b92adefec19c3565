"""Dataset lifecycle commands (create, add, remove, upload, close, sync, publish, tag, ...)."""

from __future__ import annotations

import math
import re
import time
from pathlib import Path
from typing import Any

import click

from fsmount.api import dataset as api
from fsmount.api.dataset import Dataset
from fsmount.api.scan import folder_bytes
from fsmount.api.workspace import Workspace
from fsmount.config import parse_size
from fsmount.errors import UsageError
from fsmount.format.objects import DirEntry, FileEntry, SymlinkEntry
from fsmount.fs.launcher import Mount

from .group import with_workspace
from .output import emit, human_bytes, progress_bar
from .overlay_commands import print_pending

json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
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
@click.argument("paths", nargs=-1, required=True)
@id_option
@click.option("--dataset-folder", default=None, help="Where in the dataset to put them (default: the root).")
@click.option("--wildcard", default=None, help="Only files whose name matches this glob.")
@click.option("--non-recursive", is_flag=True, help="Only the top level of a folder.")
@json_option
@with_workspace
def add(
    ws: Workspace,
    paths: tuple[str, ...],
    dataset_id: str | None,
    dataset_folder: str | None,
    wildcard: str | None,
    non_recursive: bool,
    as_json: bool,
) -> None:
    """Stage files and folders (a folder's contents go under the dataset root or --dataset-folder)."""
    for p in paths:
        if not Path(p).exists() and not Path(p).is_symlink():
            raise UsageError(f"{p}: no such file or directory")
    ds = _draft(ws, dataset_id)
    n = sum(
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


def _state_text(d: Dataset) -> str:
    if d.stale_since is None:
        return d.state
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.stale_since))
    return f"{d.state} (stale, no writer since {when})"


@click.command(name="list")
@click.option("--project", default=None)
@click.option("--name", default=None)
@click.option("--tag", "tags", multiple=True)
@json_option
@with_workspace
def list_(ws: Workspace, project: str | None, name: str | None, tags: tuple[str, ...], as_json: bool) -> None:
    """List versions (drafts included), oldest first."""
    items = Dataset.list_datasets(project, name, list(tags), workspace=ws)
    rows: list[dict[str, Any]] = [
        {
            "id": d.id,
            "project": d.project,
            "name": d.name,
            "version": d.version,
            "state": d.state,
            "tags": d.tags,
            "parents": d.parents,
            "stale": d.stale,
        }
        for d in items
    ]
    shown = {d.id: _state_text(d) for d in items}

    def text() -> None:
        for r in rows:
            click.echo(
                f"{r['id']}  {r['project']}/{r['name']}@{r['version']}  {shown[r['id']]:<9}  "
                f"{','.join(r['tags'])}"
            )

    emit({"datasets": rows}, as_json, text)


@click.command()
@click.argument("ref")
@json_option
@with_workspace
def info(ws: Workspace, ref: str, as_json: bool) -> None:
    """Everything about one version: state, tags, lineage, size, and its own changes."""
    ds = Dataset.get(ref=ref, only_final=False, workspace=ws)
    d = ds.info()

    def text() -> None:
        for k in ("id", "project", "name", "version", "state", "description", "author", "message"):
            if d.get(k):
                click.echo(f"{k + ':':<13}{_state_text(ds) if k == 'state' else d[k]}")
        click.echo(f"{'created:':<13}{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['created']))}")
        click.echo(f"{'tags:':<13}{', '.join(d['tags']) or '-'}")
        click.echo(f"{'parents:':<13}{', '.join(d['parents']) or '-'}")
        if "lineage" in d:
            click.echo(f"{'lineage:':<13}{' <- '.join(x[:12] for x in d['lineage'])}")
            click.echo(f"{'files:':<13}{d['files']} ({human_bytes(d['bytes'])})")
            for kind in ("added", "modified", "removed"):
                click.echo(f"{kind + ':':<13}{len(d[kind])}")
                for p in d[kind][:20]:
                    click.echo(f"  {p}")
                if len(d[kind]) > 20:
                    click.echo(f"  ... {len(d[kind]) - 20} more")
        else:
            click.echo(f"{'staged:':<13}{d['staged_files']} entries, {d['uploaded_files']} uploaded")

    emit(d, as_json, text)


@click.command()
@click.argument("ref")
@click.argument("path", required=False, default="")
@click.option("-l", "long", is_flag=True, help="Long listing: kind, mode, size, path.")
@click.option("-r", "--recursive", is_flag=True)
@json_option
@with_workspace
def ls(ws: Workspace, ref: str, path: str, long: bool, recursive: bool, as_json: bool) -> None:
    """List files of a version (one directory level unless -r)."""
    ds = Dataset.get(ref=ref, workspace=ws)
    base = path.strip("/")
    rows: list[dict[str, Any]] = []
    for p, e in ds.iter_entries(path or None):
        rel = p[len(base) :].lstrip("/") if base else p
        if not recursive and "/" in rel:
            continue
        kind = "dir" if isinstance(e, DirEntry) else "symlink" if isinstance(e, SymlinkEntry) else "file"
        row: dict[str, Any] = {"path": p, "kind": kind, "mode": oct(e.mode)}
        if isinstance(e, FileEntry):
            row.update(size=e.size, sha256=e.sha256.hex())
        elif isinstance(e, SymlinkEntry):
            row["target"] = e.target
        elif isinstance(e, DirEntry):
            row.update(files=e.nfiles, size=e.nbytes)
        rows.append(row)

    def text() -> None:
        for r in rows:
            name = r["path"] + ("/" if r["kind"] == "dir" else "")
            if r["kind"] == "symlink":
                name += f" -> {r['target']}"
            if long:
                click.echo(f"{r['kind'][0]} {r['mode'][2:]:>4} {r.get('size', 0):>12}  {name}")
            else:
                click.echo(name)

    emit({"id": ds.id, "entries": rows}, as_json, text)


@click.command()
@click.argument("ref_a")
@click.argument("ref_b", required=False)
@json_option
@with_workspace
def diff(ws: Workspace, ref_a: str, ref_b: str | None, as_json: bool) -> None:
    """What changed from REF_A to REF_B; or, given a writable MOUNTPOINT, its pending changes."""
    if ref_b is None:
        try:
            mount = Mount.find(ref_a)
        except UsageError:
            raise UsageError("diff needs REF_A REF_B, or the MOUNTPOINT of a writable mount") from None
        print_pending(mount.diff(), as_json)
        return

    a = Dataset.get(ref=ref_a, workspace=ws)
    b = Dataset.get(ref=ref_b, workspace=ws)
    changes = a.diff(b)
    out: dict[str, Any] = {"from": a.id, "to": b.id, "added": [], "modified": [], "removed": []}
    for c in changes:
        out[c.kind].append(c.path)

    def text() -> None:
        for c in changes:
            click.echo(f"{c.kind[0].upper()} {c.path}")

    emit(out, as_json, text)


@click.command()
@click.argument("ref")
@click.option("--repair", is_flag=True, help="Re-upload what is missing or corrupt from --folder.")
@click.option("--folder", default=None, type=click.Path(file_okay=False),
              help="With --repair: a local copy of the version (same paths).")
@json_option
@with_workspace
def verify(ws: Workspace, ref: str, repair: bool, folder: str | None, as_json: bool) -> None:
    """Re-hash everything the store holds for a version; exit 1 if anything is missing or corrupt.

    With --repair --folder DIR, each damaged block is written again from the file at the same
    path under DIR (only if its content hashes right), each damaged tree from the local cache.
    """
    if repair != (folder is not None):
        raise UsageError("--repair and --folder DIR go together")
    ds = Dataset.get(ref=ref, workspace=ws)
    if repair:
        assert folder is not None
        report = ds.repair_dataset(folder)

        def text() -> None:
            for line in report.repaired:
                click.echo(f"repaired {line}")
            for line in report.unrepaired:
                click.echo(f"NOT repaired: {line}")
            if not report.problems:
                click.echo(f"{ds.id}: all {ds.record.files} files verified, nothing to repair")
            elif not report.unrepaired:
                click.echo(f"{ds.id}: repaired {len(report.repaired)} objects; all files verified")

        emit(
            {"id": ds.id, "ok": not report.unrepaired, "problems": [str(p) for p in report.problems],
             "repaired": report.repaired, "unrepaired": report.unrepaired},
            as_json,
            text,
        )
        if report.unrepaired:
            raise SystemExit(1)
        return
    problems = ds.verify_dataset_hash()
    emit(
        {"id": ds.id, "ok": not problems, "problems": problems},
        as_json,
        "\n".join(problems) if problems else f"{ds.id}: all {ds.record.files} files verified",
    )
    if problems:
        raise SystemExit(1)


@click.command()
@click.argument("ref")
@click.option(
    "--copy", "copy_to", default=None, type=click.Path(), help="Make a mutable copy in this folder."
)
@click.option("--overwrite", is_flag=True, help="With --copy: replace the folder's contents.")
@json_option
@quiet_option
@with_workspace
def get(ws: Workspace, ref: str, copy_to: str | None, overwrite: bool, as_json: bool, quiet: bool) -> None:
    """Print the path of a read-only local copy (cached), or make a mutable copy with --copy."""
    ds = Dataset.get(ref=ref, workspace=ws)
    with progress_bar(ds.record.nbytes, "downloading", quiet or as_json) as bar:
        if copy_to:
            path = ds.get_mutable_local_copy(copy_to, overwrite=overwrite, progress=bar)
        else:
            path = ds.get_local_copy(progress=bar)
    emit({"id": ds.id, "path": path}, as_json, path)


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
    list_,
    info,
    ls,
    diff,
    verify,
    get,
]
