"""fsmount: versioned ML datasets you can mount, with a shared, verified block cache."""

from __future__ import annotations

from typing import TYPE_CHECKING

from fsmount.errors import FsmountError

if TYPE_CHECKING:
    from fsmount.api.dataset import Dataset
    from fsmount.api.fsspec_fs import FsmountFileSystem
    from fsmount.api.workspace import Workspace
    from fsmount.fs import mounted

__all__ = ["Dataset", "FsmountError", "FsmountFileSystem", "Workspace", "mounted"]


def __getattr__(name: str) -> object:
    """Dataset, Workspace, mounted, FsmountFileSystem: imported on first use, so that `fsmount`'s
    own start-up (the CLI, the mount daemon) pays only for what it uses."""
    if name == "Dataset":
        from fsmount.api.dataset import Dataset

        return Dataset
    if name == "Workspace":
        from fsmount.api.workspace import Workspace

        return Workspace
    if name == "mounted":  # imported lazily: pyfuse3 is only needed by mounts
        from fsmount.fs import mounted

        return mounted
    if name == "FsmountFileSystem":  # imported lazily: fsspec is an extra (fsmount[fsspec])
        from fsmount.api.fsspec_fs import FsmountFileSystem

        return FsmountFileSystem
    raise AttributeError(name)
