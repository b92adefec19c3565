"""The CLI imports a command's module only when that command runs, and the table saying which
module holds which command matches the modules' COMMANDS."""

from __future__ import annotations

import importlib
import subprocess
import sys

from fsmount.cli.main import COMMAND_MODULES


def test_the_command_table_matches_every_module() -> None:
    modules = set(COMMAND_MODULES.values())
    found = {}
    for module in modules:
        for cmd in importlib.import_module(f"fsmount.cli.{module}").COMMANDS:
            found[cmd.name] = module
    assert found == COMMAND_MODULES


def test_mount_does_not_import_the_other_commands() -> None:
    """What `fsmount mount` loads before its daemon starts: not the dataset facade, not the
    catalogue, not the web page."""
    code = (
        "import sys\n"
        "from fsmount.cli.main import main\n"
        "main.get_command(None, 'mount')\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
                 .stdout.split())
    assert "fsmount.cli.mount_commands" in loaded
    for heavy in ("fsmount.api.dataset", "fsmount.cli.catalog_commands", "fsmount.cli.dataset_commands",
                  "fsmount.ui", "fsmount.commit.uploader"):
        assert heavy not in loaded, heavy


def test_help_lists_every_command() -> None:
    out = subprocess.run([sys.executable, "-m", "fsmount.cli", "--help"], check=True, capture_output=True,
                         text=True).stdout
    for name in COMMAND_MODULES:
        assert f"  {name} " in out or f"  {name}\n" in out, name


def test_a_read_only_daemon_does_not_import_the_writable_side() -> None:
    """The daemon module loads the overlay, the writable operations and `--warm` only for mounts
    that use them (0.1 s of every read-only `fsmount mount`)."""
    code = (
        "import sys\n"
        "import fsmount.fs.daemon\n"
        "print(' '.join(sorted(sys.modules)))\n"
    )
    loaded = set(subprocess.run([sys.executable, "-c", code], check=True, capture_output=True, text=True)
                 .stdout.split())
    assert "pyfuse3" in loaded and "fsmount.fs.adapter" in loaded
    for heavy in ("fsmount.fs.writable", "fsmount.fs.adapter_rw", "fsmount.fs.overlay_ops",
                  "fsmount.overlay.upper", "fsmount.api.warm"):
        assert heavy not in loaded, heavy
