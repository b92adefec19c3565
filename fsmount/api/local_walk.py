"""Walk a local folder without recursion: os.walk's top-down results at any depth (Python 3.11's recurses)."""

from __future__ import annotations

import os
from collections.abc import Iterator


def walk(top: str | os.PathLike[str]) -> Iterator[tuple[str, list[str], list[str]]]:
    """(dirpath, dirnames, filenames) top down, like os.walk(top): symlinks to folders are listed
    in dirnames but not entered, unreadable folders are skipped, and the caller may prune
    dirnames in place. An explicit stack, so a folder thousands of levels deep walks fine."""
    stack = [os.fspath(top)]
    while stack:
        path = stack.pop()
        try:
            with os.scandir(path) as it:
                entries = list(it)
        except OSError:
            continue
        dirs: list[str] = []
        files: list[str] = []
        for e in entries:
            try:
                is_dir = e.is_dir()
            except OSError:
                is_dir = False
            (dirs if is_dir else files).append(e.name)
        yield path, dirs, files
        for d in reversed(dirs):  # visited in listed order
            sub = os.path.join(path, d)
            if not os.path.islink(sub):
                stack.append(sub)
