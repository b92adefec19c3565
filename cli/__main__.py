"""`python -m fsmount.cli`: the same as the `fsmount` console script."""

from .main import entry

entry()
