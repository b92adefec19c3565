"""Catalogue commands: search, squash, rename, move, set-description, metadata."""

from __future__ import annotations

import json
import re
import sys
import time
from pathlib import Path

import click

from fsmount.api import metadata as api_metadata
from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.errors import UsageError

from .group import json_option, with_workspace
from .output import emit, human_bytes, shown


@click.command()
@click.option("--project", default=None, help="Only this project and its subprojects.")
@click.option("--name", "pattern", default=None, help="Regular expression searched in the dataset name.")
@click.option("--tag", "tags", multiple=True, help="Only versions carrying this tag; repeatable.")
@click.option("--id", "ids", multiple=True, help="Only this id or id prefix; repeatable.")
@click.option("--all-states", is_flag=True, help="Drafts and aborted versions too (default: final only).")
@json_option
@with_workspace
def search(
    ws: Workspace, project: str | None, pattern: str | None, tags: tuple[str, ...], ids: tuple[str, ...],
    all_states: bool, as_json: bool,
) -> None:
    """Find versions by project, name pattern, tags and ids (clearml-data search)."""
    if pattern:
        try:  # re.compile raises more than re.error: "a{99999999999}" is an OverflowError
            re.compile(pattern)
        except (re.error, OverflowError, RecursionError, ValueError) as e:
            raise UsageError(f"invalid name pattern {pattern[:80]!r}: {e}") from None
    rows = Dataset.list_datasets(project, pattern, list(tags), list(ids), only_completed=not all_states,
                                 workspace=ws)

    def text() -> None:
        for r in rows:
            when = time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))
            size = "-" if r["bytes"] is None else human_bytes(r["bytes"])
            click.echo(f"{r['id']}  {shown(r['project'])}/{shown(r['name'])}@{shown(r['version'])}"
                       f"  {r['state']:<9}  {when}  {size:>10}  {shown(','.join(r['tags']))}")

    emit({"datasets": rows}, as_json, text)


@click.command()
@click.argument("refs", nargs=-1, required=True)
@click.option("--name", required=True, help="Name of the new dataset version.")
@click.option("--project", default=None, help="Its project (default: the first version's).")
@click.option("--version", "version", default=None, help="Its version string (default: the next free one).")
@json_option
@with_workspace
def squash(
    ws: Workspace, refs: tuple[str, ...], name: str, project: str | None, version: str | None, as_json: bool
) -> None:
    """Merge versions (in order, later wins) into one version without parents; no data is copied."""
    ds = Dataset.squash(name, list(refs), dataset_project=project, dataset_version=version, workspace=ws)
    emit({"id": ds.id, "project": ds.project, "name": ds.name, "version": ds.version, "state": ds.state,
          "files": ds.record.files, "bytes": ds.record.nbytes}, as_json,
         f"{ds.id}: {ds.project}/{ds.name}@{ds.version}, {ds.record.files} files")


@click.command()
@click.option("--project", required=True)
@click.option("--name", required=True)
@click.option("--new-name", required=True)
@json_option
@with_workspace
def rename(ws: Workspace, project: str, name: str, new_name: str, as_json: bool) -> None:
    """Rename a dataset (all its versions); REFs by the old name then say the new one."""
    Dataset.rename(new_name, project, name, workspace=ws)
    emit({"project": project, "name": new_name, "old_name": name}, as_json,
         f"{project}/{name} is now {project}/{new_name}")


@click.command()
@click.option("--project", required=True)
@click.option("--name", required=True)
@click.option("--new-project", required=True)
@json_option
@with_workspace
def move(ws: Workspace, project: str, name: str, new_project: str, as_json: bool) -> None:
    """Move a dataset (all its versions) to another project."""
    Dataset.move_to_project(new_project, project, name, workspace=ws)
    emit({"project": new_project, "name": name, "old_project": project}, as_json,
         f"{project}/{name} is now {new_project}/{name}")


@click.command(name="set-description")
@click.argument("ref")
@click.argument("text")
@json_option
@with_workspace
def set_description(ws: Workspace, ref: str, text: str, as_json: bool) -> None:
    """Set a version's description (any state)."""
    ds = Dataset.get(ref=ref, only_final=False, workspace=ws)
    ds.set_description(text)
    emit({"id": ds.id, "description": ds.description}, as_json, f"{ds.id}: description set")


_SUFFIX_KINDS = {".json": "json", ".csv": "csv", ".parquet": "parquet"}


@click.command()
@click.argument("ref")
@click.option("--set", "to_set", nargs=2, metavar="NAME FILE", default=None,
              help="Attach FILE as NAME (kind from the suffix: .json, .csv, .parquet, else bytes).")
@click.option("--kind", type=click.Choice(["json", "csv", "parquet", "bytes"]), default=None,
              help="With --set: the kind, whatever the suffix.")
@click.option("--get", "to_get", metavar="NAME", default=None, help="Write attachment NAME's bytes out.")
@click.option("-o", "--output", type=click.Path(dir_okay=False), default=None,
              help="With --get: to this file.")
@click.option("--remove", "to_remove", metavar="NAME", default=None, help="Remove attachment NAME.")
@json_option
@with_workspace
def metadata(
    ws: Workspace, ref: str, to_set: tuple[str, str] | None, kind: str | None, to_get: str | None,
    output: str | None, to_remove: str | None, as_json: bool,
) -> None:
    """List a version's metadata attachments, or set, get or remove one."""
    if sum(x is not None for x in (to_set, to_get, to_remove)) > 1:
        raise UsageError("give one of --set, --get and --remove")
    ds = Dataset.get(ref=ref, only_final=False, workspace=ws)
    store = ws.store
    if to_set is not None:
        name, file = to_set
        data = _read_small(Path(file))
        chosen = kind or _SUFFIX_KINDS.get(Path(file).suffix.lower(), "bytes")
        if chosen == "json":
            try:
                json.loads(data)
            except ValueError as e:
                raise UsageError(f"{file}: not JSON ({e})") from None
        att = api_metadata.set_metadata_bytes(store, ds.id, name, chosen, data)
        emit({"id": ds.id, **att.as_dict()}, as_json, f"{ds.id}: {name} ({chosen}, {human_bytes(att.size)})")
        return
    if to_get is not None:
        _, data = api_metadata.read_metadata_bytes(store, ds.id, to_get)
        if output:
            Path(output).write_bytes(data)
        else:
            sys.stdout.buffer.write(data)
            sys.stdout.buffer.flush()
        return
    if to_remove is not None:
        api_metadata.remove_metadata(store, ds.id, to_remove)
        emit({"id": ds.id, "removed": to_remove}, as_json, f"{ds.id}: {to_remove} removed")
        return
    rows = ds.list_metadata()

    def text() -> None:
        for r in rows:
            click.echo(f"{shown(r['name'])}  {shown(r['kind'])}  {human_bytes(r['size'])}"
                       f"  {shown(r['hash'])}")

    emit({"id": ds.id, "metadata": rows}, as_json, text)


def _read_small(path: Path) -> bytes:
    """A file's bytes, refused before reading when it is over the attachment limit."""
    try:
        size = path.stat().st_size
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    if size > api_metadata.MAX_ATTACHMENT_BYTES:
        limit = api_metadata.MAX_ATTACHMENT_BYTES // 2**20
        raise UsageError(f"{path} is {size} bytes: the metadata limit is {limit} MiB")
    return path.read_bytes()


COMMANDS = [search, squash, rename, move, set_description, metadata]
