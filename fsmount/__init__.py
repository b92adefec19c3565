"""fsmount: versioned ML datasets you can mount, with a shared, verified block cache."""

from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.errors import FsmountError

__all__ = ["Dataset", "FsmountError", "FsmountFileSystem", "Workspace", "mounted"]


def __getattr__(name: str) -> object:
    if name == "mounted":  # imported lazily: pyfuse3 is only needed by mounts
        from fsmount.fs import mounted

        return mounted
    if name == "FsmountFileSystem":  # imported lazily: fsspec is an extra (fsmount[fsspec])
        from fsmount.api.fsspec_fs import FsmountFileSystem

        return FsmountFileSystem
    raise AttributeError(name)
