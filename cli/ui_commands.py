"""`fsmount ui`: parse, then serve the web pages (fsmount/ui) for the command line's store and cache."""

from __future__ import annotations

from pathlib import Path

import click

from fsmount.api.workspace import Workspace
from fsmount.config import parse_size
from fsmount.errors import UsageError

from .group import with_workspace


@click.command()
@click.option("--port", default=8765, show_default=True, type=click.IntRange(0, 65535),
              help="TCP port (0: any free port; the URL is printed).")
@click.option("--host", default="127.0.0.1", show_default=True,
              help="Address to listen on; anything but loopback needs --token.")
@click.option("--token", default=None, help="Every request must carry it (cookie from ?token=, or header).")
@click.option("--token-file", default=None, type=click.Path(dir_okay=False),
              help="Read the token from the first line of this file (kept out of the process list).")
@click.option("--open", "open_browser", is_flag=True, help="Open the page in a browser.")
@click.option("--preview-limit", default="16MiB", show_default=True,
              help="Files larger than this show their size and hash only.")
@with_workspace
def ui(
    ws: Workspace, port: int, host: str, token: str | None, token_file: str | None, open_browser: bool,
    preview_limit: str,
) -> None:
    """Serve a local web page: datasets, versions with their lineage graph, files, diffs, mounts."""
    if token_file is not None:
        if token is not None:
            raise UsageError("--token and --token-file: give one")
        lines = Path(token_file).read_text().splitlines()
        token = lines[0].strip() if lines else ""
    limit = parse_size(preview_limit, what="--preview-limit")
    # Imported here, not at the top: the web stack is the optional extra fsmount[ui], and every other
    # command should start without loading (or needing) it.
    try:
        from fsmount.ui.server import serve
    except ImportError as e:
        why = f"fsmount ui needs the ui extra: pip install 'fsmount[ui]' ({e.name} is missing)"
        raise UsageError(why) from None
    serve(ws, host, port, token=token, open_browser=open_browser, preview_limit=limit)


COMMANDS = [ui]
