"""`fsmount check`: the whole store's invariants (restic-check style); exit 1 with one line per problem."""

from __future__ import annotations

import click

from fsmount.api.workspace import Workspace
from fsmount.check.store_check import CheckReport, check_store

from .group import with_workspace
from .output import emit, human_bytes


def _summary(ws: Workspace, report: CheckReport) -> str:
    s = report.stats
    states = ", ".join(f"{n} {state}" for state, n in sorted(s.by_state.items())) or "no versions"
    text = (
        f"{ws.store.url}: {states}; {s.trees} trees and {s.blocks} blocks ({human_bytes(s.block_bytes)})"
        f" checked, no problems; {s.orphans} unreferenced objects ({human_bytes(s.orphan_bytes)})"
    )
    if s.stale_locks:
        text += f"; {s.stale_locks} stale locks"
    return text


@click.command()
@click.option("--read-data", is_flag=True, help="Fetch every block and check its hash (slow: reads it all).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@with_workspace
def check(ws: Workspace, read_data: bool, as_json: bool) -> None:
    """Check the whole store: states, records, trees, blocks, parents, format numbers; list orphans."""
    report = check_store(ws.store, read_data=read_data)
    text = "\n".join(str(p) for p in report.problems) if report.problems else _summary(ws, report)
    emit({"store": ws.store.url, **report.to_json()}, as_json, text)
    if report.problems:
        raise SystemExit(1)


COMMANDS = [check]
