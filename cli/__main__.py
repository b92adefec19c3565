"""`python -m fsmount.cli`: the same as the `fsmount` console script."""

from fsmount.cli.main import entry

entry()
