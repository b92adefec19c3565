"""fsmount: versioned ML datasets you can mount, with a shared, verified block cache."""

from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.errors import FsmountError

__all__ = ["Dataset", "FsmountError", "Workspace", "mounted"]


def __getattr__(name: str) -> object:
    if name == "mounted":  # imported lazily: pyfuse3 is only needed by mounts
        from fsmount.fs import mounted

        return mounted
    raise AttributeError(name)
