"""FUSE mounts of dataset versions: a core testable without FUSE, a thin adapter, the daemon."""

from fsmount.fs.launcher import Mount, mounted

__all__ = ["Mount", "mounted"]
