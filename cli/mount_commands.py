"""`fsmount mount`, `umount` and `status`: parse, call fsmount.fs, print."""

from __future__ import annotations

import logging
import os
from pathlib import Path

import click
from fsmount.cli.output import emit, human_bytes

from fsmount.errors import FsmountError, UsageError

log = logging.getLogger(__name__)


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
@click.option("--allow-other", is_flag=True, help="Let other users read (adds default_permissions).")
@click.option("-o", "options", multiple=True, metavar="OPT[,OPT]", help="FUSE mount options.")
@click.option(
    "--timeout",
    type=float,
    default=None,
    help="Seconds before an uncached read fails with EIO when the store does not answer [30].",
)
@click.option("--store", default=None, help="Store URL (file://PATH or s3://BUCKET[/PREFIX]).")
@click.option("--endpoint-url", default=None, help="S3 endpoint (MinIO, Ceph, moto...).")
@click.option("--cache-dir", default=None, help="Local cache folder.")
@click.option("--cache-size", default=None, help="Cache byte cap, e.g. 20GiB.")
@click.option(
    "--credentials-file", default=None, help="KEY=VALUE lines (AWS_ACCESS_KEY_ID=...) for the store."
)
@click.option(
    "--log-level",
    default=None,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
    help="Daemon log level [info].",
)
@click.option("--log-file", default=None, help="Daemon log file (rotated at 10 MiB, 3 kept); else stderr.")
@click.option("--metrics-file", default=None, help="Prometheus text file the daemon rewrites every 10 s.")
@click.option("--metrics-port", type=int, default=None, help="Serve Prometheus metrics on 127.0.0.1:PORT.")
@click.option("--write", "-w", "writable", is_flag=True,
              help="Writable: changes go to a local overlay; 'fsmount commit' makes them a version.")
@click.option("--overlay", default=None, type=click.Path(file_okay=False),
              help="Overlay folder for --write [$XDG_DATA_HOME/fsmount/overlays/<key>].")
@click.option("--ready-fd", type=int, default=None, hidden=True)
@click.pass_context
def mount(
    ctx: click.Context,
    ref: str | None,
    mountpoint: str | None,
    config_file: str | None,
    foreground: bool,
    allow_other: bool,
    options: tuple[str, ...],
    timeout: float | None,
    store: str | None,
    endpoint_url: str | None,
    cache_dir: str | None,
    cache_size: str | None,
    credentials_file: str | None,
    log_level: str | None,
    log_file: str | None,
    metrics_file: str | None,
    metrics_port: int | None,
    writable: bool,
    overlay: str | None,
    ready_fd: int | None,
) -> None:
    """Mount version REF at MOUNTPOINT, read-only or with --write (returns once the mount is live)."""
    from fsmount.service.request import MountRequest

    req = MountRequest(
        ref or "", mountpoint or "", store=store, endpoint_url=endpoint_url, cache_dir=cache_dir,
        cache_size=cache_size, allow_other=allow_other, write=writable, overlay=overlay,
        credentials_file=credentials_file, log_level=log_level, log_file=log_file,
        metrics_file=metrics_file, metrics_port=metrics_port, timeout=timeout, fuse_options=list(options),
    )
    if config_file:
        from fsmount.service.config import parse_conf

        if ref or mountpoint:
            raise UsageError("give either --config or REF MOUNTPOINT, not both")
        req = req.filled_from(parse_conf(Path(config_file)))  # options given here win over the file
        req.service = True
    if not req.ref or not req.mountpoint:
        raise UsageError("mount needs REF and MOUNTPOINT (or --config FILE)")
    if req.overlay and not req.write:
        raise UsageError("--overlay needs --write")
    if req.timeout is not None and req.timeout <= 0:
        raise UsageError("--timeout must be positive")
    req.mountpoint = os.path.abspath(req.mountpoint)
    req.overlay = os.path.abspath(req.overlay) if req.overlay else None
    if req.credentials_file:
        from fsmount.service.config import load_credentials

        os.environ.update(load_credentials(req.credentials_file))  # for boto3, and the daemon we start
    group = ctx.find_root().obj or {}
    for key in ("store", "endpoint_url", "cache_dir", "cache_size"):  # this command's, else the group's
        if getattr(req, key) is None:
            setattr(req, key, group.get(key))
    group_level = ctx.find_root().params.get("log_level") or "warning"
    req.log_level = req.log_level or ("info" if group_level == "warning" else group_level)  # daemons: info
    if foreground:
        from fsmount.fs.daemon import run
        from fsmount.logs import setup_logging

        setup_logging(req.log_level, req.log_file,
                      timestamps=bool(req.log_file) or not os.environ.get("JOURNAL_STREAM"))
        ctx.exit(run(req, ready_fd))
    from fsmount.fs.launcher import daemon_argv, start_background

    start_background(daemon_argv(req), req.mountpoint)


@click.command()
@click.argument("mountpoint")
def umount(mountpoint: str) -> None:
    """Unmount MOUNTPOINT (also when its daemon has died)."""
    from fsmount.fs.launcher import umount as do_umount

    do_umount(mountpoint)


def _print_counters(info: dict, status: dict | None) -> None:
    click.echo(f"{info['mountpoint']}: {info.get('name', '')} {info['version']}")
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


@click.command()
@click.argument("mountpoint", required=False)
@click.option("--json", "as_json", is_flag=True, help="Machine-readable output.")
def status(mountpoint: str | None, as_json: bool) -> None:
    """List live mounts, or show one mount's counters."""
    from fsmount.fs import control

    if mountpoint is None:
        mounts = control.list_mounts()
        emit(
            {"mounts": mounts},
            as_json,
            lambda: (
                [
                    click.echo(
                        f"{m['mountpoint']}  {m.get('name', '')}  {m['version']}"
                        f"{'' if m['alive'] else '  (daemon dead)'}"
                    )
                    for m in mounts
                ]
                or click.echo("no fsmount mounts")
            ),
        )
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
