"""`fsmount warm`: fill the local cache with a version or some of its paths before a job reads them."""

from __future__ import annotations

import sys
from typing import Any

import click

from fsmount.api.dataset import Dataset
from fsmount.api.warm import DEFAULT_WORKERS, WarmResult
from fsmount.api.workspace import Workspace

from .group import json_option, quiet_option, with_workspace
from .output import emit, human_bytes


class _Bar:
    """A byte progress bar on stderr, made once the total is known; nothing when quiet or not a tty."""

    def __init__(self, quiet: bool) -> None:
        self.show = not quiet and sys.stderr.isatty()
        self.bar: Any = None

    def total(self, n: int) -> None:
        if self.show and n:
            self.bar = click.progressbar(length=n, label="warming", file=sys.stderr, show_pos=False)
            self.bar.__enter__()

    def advance(self, n: int) -> None:
        if self.bar is not None:
            self.bar.update(n)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.__exit__(None, None, None)
            self.bar = None


def _text(r: WarmResult, dry_run: bool) -> str:
    what = ", ".join(r.paths)
    verb = "would fetch" if dry_run else "fetched"
    return (
        f"{r.version} {what}: {r.files:,} files in {r.objects:,} objects ({human_bytes(r.bytes)}); "
        f"{verb} {r.fetched:,} ({human_bytes(r.bytes_fetched)}), {r.already_cached:,} already cached; "
        f"{r.seconds:.1f} s"
    )


@click.command()
@click.argument("ref")
@click.argument("paths", nargs=-1)
@click.option(
    "--workers",
    type=click.IntRange(1, 256),
    default=DEFAULT_WORKERS,
    show_default=True,
    help="Objects fetched at once.",
)
@click.option("--dry-run", is_flag=True, help="Only count what would be fetched (reads the trees, no data).")
@json_option
@quiet_option
@with_workspace
def warm(
    ws: Workspace, ref: str, paths: tuple[str, ...], workers: int, dry_run: bool, as_json: bool, quiet: bool
) -> None:
    """Fill the cache with version REF, or only PATHS (files or folders), before a job reads it.

    Fetches each object the selection needs once, in parallel; skips what is cached already (run
    it again after an interruption and it goes on). Refuses a selection larger than the cache cap.
    """
    ds = Dataset.get(ref=ref, workspace=ws)
    bar = _Bar(quiet or as_json)
    try:
        result = ds.warm(paths, progress=bar.advance, workers=workers, on_total=bar.total, dry_run=dry_run)
    finally:
        bar.close()
    emit({**result.as_dict(), "dry_run": dry_run}, as_json, _text(result, dry_run))


COMMANDS = [warm]
