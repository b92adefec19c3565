"""What every command shares: one-line errors (FsmountGroup) and the store options that make a Workspace."""

from __future__ import annotations

import functools
import logging
import os
import sys
from collections.abc import Callable
from typing import Any

import click

from fsmount.api.workspace import Workspace
from fsmount.errors import FsmountError

from .output import shown

log = logging.getLogger("fsmount.cli")


def _usage_exit(e: click.UsageError) -> None:
    """click's own checks (a bad value, a missing argument) as one line, like every other error;
    a bare `fsmount` still gets the help text."""
    if isinstance(e, click.exceptions.NoArgsIsHelpError):
        raise e
    hint = f" (see '{e.ctx.command_path} --help')" if e.ctx is not None else ""
    click.echo(f"fsmount: error: {shown(e.format_message())}{hint}", err=True)
    sys.exit(e.exit_code)


class FsmountGroup(click.Group):
    """Turns every expected failure into one line on stderr and its exit code."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.UsageError as e:
            _usage_exit(e)
            raise

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except click.UsageError as e:
            _usage_exit(e)
        except FsmountError as e:
            click.echo(f"fsmount: error: {shown(e)}", err=True)
            sys.exit(e.exit_code)
        except KeyboardInterrupt:
            click.echo("fsmount: interrupted", err=True)
            sys.exit(130)
        except (click.ClickException, click.exceptions.Exit, click.exceptions.Abort, SystemExit):
            raise
        except BrokenPipeError:  # `fsmount ... | head`: the reader has all it wants
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
            sys.exit(0)
        except OSError as e:
            where = f": {e.filename}" if e.filename else ""
            click.echo(f"fsmount: error: {shown(e.strerror or e)}{shown(where)}", err=True)
            sys.exit(1)
        except Exception as e:  # a bug: still one line, the traceback goes to the debug log
            log.debug("unexpected error", exc_info=True)
            click.echo(f"fsmount: internal error: {type(e).__name__}: {shown(e)}", err=True)
            sys.exit(70)


def store_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """--store/--endpoint-url/--cache-dir/--cache-size, accepted on the group and on each command."""
    opts = [
        click.option(
            "--store",
            "store",
            default=None,
            help="Store URL: file://PATH, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or"
            " azure://ACCOUNT/CONTAINER[/PREFIX] (env FSMOUNT_STORE; default ~/.local/share/fsmount/store).",
        ),
        click.option(
            "--endpoint-url", default=None,
            help="S3 endpoint (MinIO, Ceph, moto...), a GCS emulator or Azurite's account URL;"
            " else AWS_ENDPOINT_URL."
        ),
        click.option(
            "--cache-dir",
            default=None,
            help="Local cache folder (env FSMOUNT_CACHE_DIR; default ~/.cache/fsmount).",
        ),
        click.option(
            "--cache-size",
            default=None,
            help="Cache byte cap, e.g. 20GiB (env FSMOUNT_CACHE_SIZE; default 20GiB).",
        ),
    ]
    for opt in reversed(opts):
        f = opt(f)
    return f


def workspace_from(ctx: click.Context, **kw: Any) -> Workspace:
    """The workspace a command uses: its own options first, then the group's, then env/defaults."""
    base = ctx.find_root().obj or {}
    merged = {k: kw.get(k) or base.get(k) for k in ("store", "endpoint_url", "cache_dir", "cache_size")}
    ws = Workspace(
        merged["store"],
        endpoint_url=merged["endpoint_url"],
        cache_dir=merged["cache_dir"],
        cache_size=merged["cache_size"],
    )
    ctx.call_on_close(ws.close)
    return ws


def with_workspace(f: Callable[..., Any]) -> Callable[..., Any]:
    """Give a command `ws` built from the store options; the options themselves are consumed."""

    @store_options
    @click.pass_context
    @functools.wraps(f)
    def wrapper(
        ctx: click.Context,
        store: str | None,
        endpoint_url: str | None,
        cache_dir: str | None,
        cache_size: str | None,
        **kw: Any,
    ) -> Any:
        ws = workspace_from(
            ctx, store=store, endpoint_url=endpoint_url, cache_dir=cache_dir, cache_size=cache_size
        )
        return f(ws, **kw)

    return wrapper


json_option = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
quiet_option = click.option("--quiet", "-q", is_flag=True, help="No progress bar.")
