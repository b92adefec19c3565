"""`fsmount mount`, `umount` and `status`: parse, call fsmount.fs, print."""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import click

from fsmount.errors import FsmountError, UsageError
from fsmount.fs import control
from fsmount.fs.launcher import start
from fsmount.fs.launcher import umount as do_umount
from fsmount.service.config import parse_conf
from fsmount.service.request import OPTIONS, MountRequest, daemon_log_level

from .output import emit, exit_now, human_bytes, shown

log = logging.getLogger(__name__)


def request_options(f: Callable[..., Any]) -> Callable[..., Any]:
    """The click options of every MountRequest option (fsmount/service/request.py's table)."""
    for opt in reversed(OPTIONS):
        if opt.kind == "flag":
            f = click.option(*opt.cli_flags, opt.name, is_flag=True, help=opt.help)(f)
        elif opt.kind == "list":
            f = click.option(*opt.cli_flags, opt.name, multiple=True, metavar=opt.metavar, help=opt.help)(f)
        else:
            f = click.option(*opt.cli_flags, opt.name, default=None, metavar=opt.metavar, help=opt.help)(f)
    return f


@click.command()
@click.argument("ref", required=False)
@click.argument("mountpoint", required=False)
@click.option(
    "--config",
    "config_file",
    default=None,
    type=click.Path(dir_okay=False),
    help="Take the mount from a conf file (/etc/fsmount/NAME.conf): what fsmount@NAME runs.",
)
@click.option("--foreground", "-f", is_flag=True, help="Stay attached (for systemd); Ctrl-C unmounts.")
@request_options
@click.option("--ready-fd", type=int, default=None, hidden=True)
@click.pass_context
def mount(ctx: click.Context, ref: str | None, mountpoint: str | None, config_file: str | None,
          foreground: bool, ready_fd: int | None, **options: Any) -> None:
    """Mount version REF at MOUNTPOINT, read-only or with --write (returns once the mount is live)."""
    req = MountRequest.from_cli(ref, mountpoint, options)
    if config_file:
        if ref or mountpoint:
            raise UsageError("give either --config or REF MOUNTPOINT, not both")
        req = req.filled_from(parse_conf(Path(config_file)))  # options given here win over the file
        req.service = True
    root = ctx.find_root()
    group = {k: v for k, v in (root.obj or {}).items() if k in ("store", "endpoint_url", "cache_dir",
                                                                  "cache_size")}
    req = req.filled_from(MountRequest(req.ref, req.mountpoint, **group))  # this command's, else the group's
    req.log_level = daemon_log_level(req.log_level, root.params.get("log_level"))
    req.validate()
    if foreground:
        from fsmount.fs.daemon import run_foreground  # pyfuse3 and the FUSE core: only the daemon needs them

        ctx.exit(run_foreground(req, ready_fd))
    start(req)
    if req.write:
        _say_pending(req.mountpoint, "resuming {n} pending change(s) from {overlay}: "
                     "'fsmount diff' shows them, 'fsmount discard' drops them")
    exit_now(0)  # the daemon holds everything; this process has nothing to clean up


def _say_pending(mountpoint: str, template: str) -> None:
    """One line on stderr when a writable mount holds pending changes (silent if it cannot tell)."""
    try:
        c = control.ask(mountpoint, {"op": "status"}).get("counters", {})
    except (FsmountError, OSError):
        return
    if c.get("pending"):
        click.echo(template.format(n=c["pending"], overlay=c.get("overlay")), err=True)


@click.command()
@click.argument("mountpoint")
@click.option("--lazy", "-l", is_flag=True,
              help="Detach now even if busy; the mount goes once nothing uses it (umount -l).")
def umount(mountpoint: str, lazy: bool) -> None:
    """Unmount MOUNTPOINT (also when its daemon has died); a busy mount is refused unless --lazy."""
    res = do_umount(mountpoint, lazy=lazy)
    if res["pending"]:
        click.echo(f"{res['pending']} pending change(s) kept in {res['overlay']}: "
                   "'fsmount mount --write' with that overlay picks them up", err=True)


def _print_counters(info: dict, status: dict | None) -> None:
    click.echo(f"{shown(info['mountpoint'])}: {shown(info.get('name', ''))} {shown(info['version'])}")
    click.echo(f"  store {info.get('store')}  pid {info.get('pid')}  log {info.get('log')}")
    if status is None:
        click.echo("  daemon not answering (died?): run 'fsmount umount' on it")
        return
    c = status["counters"]
    s = c["store"]
    if c.get("writable"):
        click.echo(f"  writable: {c['pending']} pending change(s) in {c['overlay']}; "
                   f"{c['commits']} commit(s)")
    click.echo(
        f"  served {human_bytes(c['bytes_served'])} in {c['reads']} reads; "
        f"blocks: {c['block_hits']} cache hits, {c['block_misses']} fetched"
    )
    click.echo(
        f"  store: {s['objects_fetched']} objects, {human_bytes(s['bytes_fetched'])} fetched; "
        f"cache {s['cache_hits']} hits / {s['cache_misses']} misses"
    )
    click.echo(
        f"  prefetch: {c['prefetch_started']} started, {c['prefetch_fetched']} fetched "
        f"({human_bytes(c['prefetch_bytes'])}), {c['prefetch_skipped']} skipped for budget"
    )
    click.echo(
        f"  errors: {c['errors']} (store {s['store_errors']}, integrity {s['integrity_errors']}, "
        f"timeouts {c['timeouts']}){'  last: ' + c['last_error'] if c.get('last_error') else ''}"
    )
    w = status.get("warm")
    if w:
        click.echo(f"  warm {', '.join(w['paths'])}: {w['state']}, "
                   f"{w['objects_done']:,}/{w['objects_total']:,} objects, "
                   f"{human_bytes(w['bytes_done'])}/{human_bytes(w['bytes_total'])} "
                   f"({w['objects_fetched']:,} fetched, {w['already_cached']:,} already cached), "
                   f"{w['seconds']:.1f} s{'  error: ' + w['error'] if w.get('error') else ''}")


@click.command()
@click.argument("mountpoint", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(mountpoint: str | None, as_json: bool) -> None:
    """List live mounts, or show one mount's counters."""
    if mountpoint is None:
        mounts = control.list_mounts()

        def listing() -> None:
            for m in mounts:
                click.echo(f"{shown(m['mountpoint'])}  {shown(m.get('name', ''))}  {shown(m['version'])}"
                           f"{'' if m['alive'] else '  (daemon dead)'}")
            if not mounts:
                click.echo("no fsmount mounts")

        emit({"mounts": mounts}, as_json, listing)
        return
    info = control.find_mount(mountpoint)
    if info is None:
        raise UsageError(f"{os.path.abspath(mountpoint)} is not an fsmount mount")
    try:
        st = control.query(info["socket"])
    except (OSError, ValueError) as e:
        if as_json:
            raise FsmountError(f"the daemon of {info['mountpoint']} does not answer: {e}") from None
        st = None
    emit({**info, **(st or {})}, as_json, lambda: _print_counters(info, st))


COMMANDS = [mount, umount, status]
