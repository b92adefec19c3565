"""The `fsmount` command: click front-end over fsmount.api; parses, calls, prints, nothing more."""

from __future__ import annotations

import importlib
import sys

import click

from fsmount import config
from fsmount.errors import FsmountError
from fsmount.logs import setup_logging
from fsmount.service.config import parse_fstab_options

from .group import FsmountGroup, store_options
from .output import console_run

# The module of each command (cli/<module>.py, in its COMMANDS). A command's module is imported
# only when that command runs (or for --help): `fsmount mount` would otherwise pay for every
# other command's imports (the dataset facade, the catalogue: about 0.25 s of a quiet start-up,
# 0.7 s on a loaded machine) before its daemon starts. tests/test_cli_startup.py checks the table.
COMMAND_MODULES: dict[str, str] = {
    **dict.fromkeys(("create", "add", "remove", "upload", "close", "sync", "publish", "abort", "tag",
                     "delete", "gc"), "dataset_commands"),
    **dict.fromkeys(("list", "info", "ls", "diff", "compare", "verify", "get"), "read_commands"),
    "check": "check_commands",
    **dict.fromkeys(("mount", "umount", "status"), "mount_commands"),
    **dict.fromkeys(("commit", "discard"), "overlay_commands"),
    "warm": "warm_commands",
    **dict.fromkeys(("search", "squash", "rename", "move", "set-description", "metadata"),
                    "catalog_commands"),
    "ui": "ui_commands",
}


class LazyGroup(FsmountGroup):
    """The command group, each command's module imported when that command is asked for."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(COMMAND_MODULES)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        module = COMMAND_MODULES.get(cmd_name)
        if module is None:
            return None
        commands = importlib.import_module(f"{__package__}.{module}").COMMANDS
        return next(c for c in commands if c.name == cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
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



def fstab_argv(argv: list[str]) -> list[str] | None:
    """mount.fuse3 runs `fsmount SOURCE MOUNTPOINT -o OPTIONS`: turn that into `mount ...` arguments.

    Returns None when `argv` is an ordinary command line.
    """
    if len(argv) < 2 or argv[0] in COMMAND_MODULES or argv[0].startswith("-"):
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
    console_run()
    main(args=translated if translated is not None else argv, prog_name="fsmount")
