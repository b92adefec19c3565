"""Commands that look at versions: list, info, ls, diff/compare, verify (store or folder), get (or a part)."""

from __future__ import annotations

import time
from typing import Any

import click

from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit.staging import matches
from fsmount.errors import UsageError
from fsmount.format.objects import DirEntry, FileEntry, SymlinkEntry
from fsmount.fs.launcher import Mount

from .group import json_option, quiet_option, with_workspace
from .output import emit, human_bytes, progress_bar, shown
from .overlay_commands import print_pending


def _state_text(d: Dataset) -> str:
    if d.stale_since is None:
        return d.state
    when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(d.stale_since))
    return f"{d.state} (stale, no writer since {when})"


@click.command(name="list")
@click.argument("ref", required=False)
@click.option("--project", default=None)
@click.option("--name", default=None)
@click.option("--tag", "tags", multiple=True)
@click.option("--filter", "filters", multiple=True, metavar="GLOB",
              help="With REF: only files matching this glob (repeatable; a glob without '/' matches names).")
@click.option("--modified", is_flag=True, help="With REF: only the files this version added or modified.")
@json_option
@with_workspace
def list_(ws: Workspace, ref: str | None, project: str | None, name: str | None, tags: tuple[str, ...],
          filters: tuple[str, ...], modified: bool, as_json: bool) -> None:
    """List versions (drafts included), oldest first; or, given REF, the files of that version."""
    if ref is not None:
        if project or name or tags:
            raise UsageError("list REF takes --filter and --modified; --project, --name, --tag list versions")
        _list_files(ws, ref, filters, modified, as_json)
        return
    if filters or modified:
        raise UsageError("--filter and --modified need a REF: fsmount list REF --filter GLOB")
    items = Dataset.list_versions(project, name, list(tags), workspace=ws)
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
    states = {d.id: _state_text(d) for d in items}

    def text() -> None:
        for r in rows:
            click.echo(
                f"{r['id']}  {shown(r['project'])}/{shown(r['name'])}@{shown(r['version'])}"
                f"  {states[r['id']]:<9}  {shown(','.join(r['tags']))}"
            )

    emit({"datasets": rows}, as_json, text)


def _list_files(ws: Workspace, ref: str, filters: tuple[str, ...], modified: bool, as_json: bool) -> None:
    ds = Dataset.get(ref=ref, workspace=ws)
    changed = set(ds.list_added_files()) | set(ds.list_modified_files()) if modified else None
    rows: list[dict[str, Any]] = []
    for p, e in ds.iter_entries():
        if isinstance(e, DirEntry) or (changed is not None and p not in changed):
            continue
        if filters and not any(matches(p, f) for f in filters):
            continue
        row: dict[str, Any] = {"path": p, "size": 0 if isinstance(e, SymlinkEntry) else e.size}
        if isinstance(e, FileEntry):
            row["sha256"] = e.sha256.hex()
        elif isinstance(e, SymlinkEntry):
            row["target"] = e.target
        else:  # an external file
            row.update(url=e.url, sha256=e.sha256.hex() or None)
        rows.append(row)

    def text() -> None:
        for r in rows:
            click.echo(f"{r['size']:>12}  {(r.get('sha256') or '-')[:16]:<16}  {shown(r['path'])}"
                       + (f" -> {shown(r['target'])}" if "target" in r else ""))
        click.echo(f"{len(rows)} files, {human_bytes(sum(r['size'] for r in rows))}")

    emit({"id": ds.id, "files": rows}, as_json, text)


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
                click.echo(f"{k + ':':<13}{_state_text(ds) if k == 'state' else shown(d[k])}")
        click.echo(f"{'created:':<13}{time.strftime('%Y-%m-%d %H:%M:%S', time.localtime(d['created']))}")
        click.echo(f"{'tags:':<13}{shown(', '.join(d['tags'])) or '-'}")
        click.echo(f"{'parents:':<13}{', '.join(d['parents']) or '-'}")
        if "lineage" in d:
            click.echo(f"{'lineage:':<13}{' <- '.join(x[:12] for x in d['lineage'])}")
            click.echo(f"{'files:':<13}{d['files']} ({human_bytes(d['bytes'])})")
            for kind in ("added", "modified", "removed"):
                click.echo(f"{kind + ':':<13}{len(d[kind])}")
                for p in d[kind][:20]:
                    click.echo(f"  {shown(p)}")
                if len(d[kind]) > 20:
                    click.echo(f"  ... {len(d[kind]) - 20} more")
        else:
            click.echo(f"{'staged:':<13}{d['staged_files']} entries, {d['uploaded_files']} uploaded")
        for m in d.get("metadata", []):
            size = human_bytes(m["size"])
            click.echo(f"{'metadata:':<13}{shown(m['name'])} ({shown(m['kind'])}, {size})"
                       f" {shown(m['hash'][:16])}")

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
            name = shown(r["path"]) + ("/" if r["kind"] == "dir" else "")
            if r["kind"] == "symlink":
                name += f" -> {shown(r['target'])}"
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
            click.echo(f"{c.kind[0].upper()} {shown(c.path)}")

    emit(out, as_json, text)


@click.command()
@click.argument("source")
@click.argument("target")
@json_option
@click.pass_context
def compare(ctx: click.Context, source: str, target: str, as_json: bool) -> None:
    """What TARGET changed from SOURCE (clearml-data's name for diff of two versions)."""
    ctx.invoke(diff, ref_a=source, ref_b=target, as_json=as_json)


@click.command()
@click.argument("ref")
@click.option("--repair", is_flag=True, help="Re-upload what is missing or corrupt from --folder.")
@click.option("--folder", default=None, type=click.Path(),
              help="Check this local folder against the version (with --repair: the copy to repair from).")
@click.option("--filesize", is_flag=True, help="With --folder: compare sizes only, without hashing.")
@json_option
@with_workspace
def verify(ws: Workspace, ref: str, repair: bool, folder: str | None, filesize: bool, as_json: bool) -> None:
    """Re-hash everything the store holds for a version; exit 1 if anything is missing or corrupt.

    With --folder DIR, check DIR against the version instead: every file there with the right
    bytes (--filesize: the right size), and nothing more. With --repair --folder DIR, each damaged
    block is written again from the file at the same path under DIR (only if its content hashes
    right), each damaged tree from the local cache.
    """
    if repair and folder is None:
        raise UsageError("--repair needs --folder DIR: a good copy to repair from")
    if filesize and (folder is None or repair):
        raise UsageError("--filesize goes with --folder DIR (and not with --repair)")
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
    if folder is not None:
        lines = ds.verify_dataset_hash(local_copy_path=folder, skip_hash=filesize)
        how = "by size" if filesize else "by SHA-256"
        emit({"id": ds.id, "folder": folder, "ok": not lines, "problems": lines}, as_json,
             "\n".join([*lines, f"{folder}: {len(lines)} differences from {ds.id}"]) if lines
             else f"{folder}: equal to {ds.id} ({ds.record.files} files, {how})")
        if lines:
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
@click.option("--part", type=int, default=None, help="Only part K (0-based) of --num-parts N.")
@click.option("--num-parts", type=int, default=None,
              help="Split the version into N disjoint parts of about equal bytes, the same on every machine.")
@click.option("--files", "files", multiple=True, metavar="GLOB",
              help="Only paths matching this glob (repeatable).")
@json_option
@quiet_option
@with_workspace
def get(ws: Workspace, ref: str, copy_to: str | None, overwrite: bool, part: int | None,
        num_parts: int | None, files: tuple[str, ...], as_json: bool, quiet: bool) -> None:
    """Print the path of a read-only local copy (cached), or make a mutable copy with --copy."""
    ds = Dataset.get(ref=ref, workspace=ws)
    with progress_bar(ds.record.nbytes if part is None and not files else None, "downloading",
                      quiet or as_json) as bar:
        if copy_to:
            path = ds.get_mutable_local_copy(copy_to, overwrite=overwrite, progress=bar, part=part,
                                             num_parts=num_parts, files=files)
        else:
            path = ds.get_local_copy(progress=bar, part=part, num_parts=num_parts, files=files)
    emit({"id": ds.id, "path": path}, as_json, path)


COMMANDS = [list_, info, ls, diff, compare, verify, get]
