"""`fsmount commit`, `discard` and `diff MOUNTPOINT`: ask a writable mount's daemon, print the answer."""

from __future__ import annotations

import logging
from typing import Any

import click

from fsmount.errors import UsageError
from fsmount.fs.launcher import Mount

from .output import emit, shown

log = logging.getLogger(__name__)


def print_pending(reply: dict[str, Any], as_json: bool) -> None:
    def text() -> None:
        for kind in ("added", "modified", "removed"):
            for p in reply.get(kind, []):
                click.echo(f"{kind[0].upper()} {shown(p)}")
        if not any(reply.get(k) for k in ("added", "modified", "removed")):
            click.echo("no pending changes")

    emit({k: reply.get(k, []) for k in ("mountpoint", "version", "added", "modified", "removed")},
         as_json, text)


@click.command()
@click.argument("mountpoint")
@click.option("-m", "--message", default="", help="Commit message.")
@click.option("--version", "version", default=None, help="Version string (default: bump the newest).")
@click.option("--tag", "tags", multiple=True, help="Tag the new version (repeatable).")
@click.option("--publish", is_flag=True, help="Publish the new version right away.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def commit(mountpoint: str, message: str, version: str | None, tags: tuple[str, ...], publish: bool,
           as_json: bool) -> None:
    """Turn a writable mount's pending changes into a new child version; the mount moves onto it."""
    reply = Mount.find(mountpoint).commit(message, version=version, tags=list(tags), publish=publish)
    if reply.get("id") is None:
        emit({"id": None, "committed": False, "parent": reply.get("parent")}, as_json,
             "nothing to commit: the overlay has no changes")
        return
    emit({k: reply.get(k) for k in ("id", "version", "parent", "files", "bytes", "blocks_uploaded",
                                     "bytes_uploaded", "resumed")} | {"committed": True},
         as_json, reply["id"])


@click.command()
@click.argument("mountpoint")
@click.option("--yes", "-y", is_flag=True, help="Do not ask for confirmation.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
def discard(mountpoint: str, yes: bool, as_json: bool) -> None:
    """Drop every pending change of a writable mount (asks first unless --yes)."""
    m = Mount.find(mountpoint)
    if not yes:
        pend = m.diff()
        n = sum(len(pend[k]) for k in ("added", "modified", "removed"))
        if not click.confirm(f"discard {n} pending change(s) in {m.path}?", default=False):
            raise UsageError("nothing discarded")
    n = m.discard()
    emit({"discarded": n}, as_json, f"discarded {n} pending change(s)")


COMMANDS = [commit, discard]
