"""How commands talk to the user: JSON or text on stdout, one-line errors, progress bars on a tty."""

from __future__ import annotations

import contextlib
import json
import os
import re
import sys
from collections.abc import Callable, Iterator
from typing import Any

import click

_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
_console = False  # set by the console entry point: the process is this one command


def console_run() -> None:
    """Called by the console entry point (cli/main.py): exit_now may end the process."""
    global _console
    _console = True


def exit_now(code: int = 0) -> None:
    """End a console run here: flush stdout and stderr, skip the interpreter's teardown (0.1 s at
    the end of `fsmount mount`, whose process has trio, botocore and diskcache loaded). Only for a
    command with nothing left to clean up; a no-op when the command runs inside another program."""
    if not _console:
        return
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    os._exit(code)


def shown(text: object) -> str:
    """A name from a store as text on a terminal: control characters (escape sequences, newlines,
    carriage returns) as `\\xNN`, so a hostile name can neither move the cursor nor fake a line."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(text))


def emit(obj: dict[str, Any], as_json: bool, text: str | Callable[[], None] | None = None) -> None:
    """One JSON object with --json; otherwise `text` (a string, or a function that prints)."""
    if as_json:
        click.echo(json.dumps(obj, indent=None, default=str))
    elif callable(text):
        text()
    elif text is not None:
        click.echo(text)


def human_bytes(n: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB", "TiB"):
        if abs(n) < 1024 or unit == "TiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TiB"


@contextlib.contextmanager
def progress_bar(total: int | None, label: str, quiet: bool) -> Iterator[Callable[[int], None] | None]:
    """A byte-count progress bar on a terminal; nothing when quiet or not a tty."""
    if quiet or not sys.stderr.isatty():
        yield None
        return
    with click.progressbar(length=total or 0, label=label, file=sys.stderr, show_pos=False) as bar:
        yield bar.update


SAMPLE = 10  # paths of each kind a change report shows unless asked for all


def change_report(changes: dict[str, list[str]], full: bool) -> dict[str, Any]:
    """Counts of each kind of change and their paths: the first SAMPLE of each, or all when `full`.

    A million-file sync would otherwise print tens of megabytes; `truncated` says paths were left out.
    """
    paths = {k: v if full else v[:SAMPLE] for k, v in changes.items()}
    return {"counts": {k: len(v) for k, v in changes.items()}, "paths": paths,
            "truncated": any(len(paths[k]) < len(v) for k, v in changes.items())}


def echo_changes(report: dict[str, Any]) -> None:
    """`A path` / `M path` / `R path` lines, then how many were left out of each kind."""
    for kind, paths in report["paths"].items():
        for p in paths:
            click.echo(f"{kind[0].upper()} {shown(p)}")
        more = report["counts"][kind] - len(paths)
        if more:
            click.echo(f"  ... and {more} more {kind} (--list shows all)")
