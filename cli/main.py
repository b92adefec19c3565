"""The `fsmount` command: click front-end over fsmount.api; parses, calls, prints, nothing more."""

from __future__ import annotations

import sys

import click

from fsmount import config
from fsmount.errors import FsmountError
from fsmount.logs import setup_logging
from fsmount.service.config import parse_fstab_options

from . import (
    catalog_commands,
    check_commands,
    dataset_commands,
    mount_commands,
    overlay_commands,
    read_commands,
    ui_commands,
    warm_commands,
)
from .group import FsmountGroup, store_options


@click.group(cls=FsmountGroup, context_settings={"help_option_names": ["-h", "--help"]})
@store_options
@click.option(
    "--log-level",
    default="warning",
    show_default=True,
    type=click.Choice(["debug", "info", "warning", "error"], case_sensitive=False),
)
@click.version_option(package_name="fsmount")
@click.pass_context
def main(
    ctx: click.Context,
    store: str | None,
    endpoint_url: str | None,
    cache_dir: str | None,
    cache_size: str | None,
    log_level: str,
) -> None:
    """Versioned datasets you can mount: create, upload, mount, commit."""
    # Under systemd, stderr goes to journald, which adds its own timestamps.
    setup_logging(log_level, timestamps=not config.under_journald())
    ctx.obj = {"store": store, "endpoint_url": endpoint_url, "cache_dir": cache_dir, "cache_size": cache_size}


for _module in (dataset_commands, read_commands, check_commands, mount_commands, overlay_commands,
                warm_commands, catalog_commands, ui_commands):
    for _cmd in _module.COMMANDS:
        main.add_command(_cmd)


def fstab_argv(argv: list[str]) -> list[str] | None:
    """mount.fuse3 runs `fsmount SOURCE MOUNTPOINT -o OPTIONS`: turn that into `mount ...` arguments.

    Returns None when `argv` is an ordinary command line.
    """
    if len(argv) < 2 or argv[0] in main.commands or argv[0].startswith("-"):
        return None
    source, mountpoint, rest = argv[0], argv[1], argv[2:]
    options: list[str] = []
    while rest:
        flag = rest.pop(0)
        if flag == "-o" and rest:
            options.append(rest.pop(0))
        elif flag.startswith("-o") and len(flag) > 2:
            options.append(flag[2:])
        # anything else mount.fuse3 may add (-n, -v...) means nothing here
    settings = parse_fstab_options(source, mountpoint, ",".join(options))
    settings.service = True  # refused here, with EX_CONFIG, like a bad key
    return ["mount", *settings.validate().cli_args()]


def entry() -> None:
    """Console entry point: the click group, or the mount.fuse3 calling convention (fstab)."""
    argv = sys.argv[1:]
    try:
        translated = fstab_argv(argv)
    except FsmountError as e:
        click.echo(f"fsmount: error: {e}", err=True)
        sys.exit(e.exit_code)
    main(args=translated if translated is not None else argv, prog_name="fsmount")
