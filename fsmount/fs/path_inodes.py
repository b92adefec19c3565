"""Inode numbers of a writable mount by path: handed out on first sight, following renames, one per
hard-link group, and the known paths indexed by parent and name.

Touched only on the trio thread. An unlinked or replaced path loses its number; the names of
one hard-link group share one number (its `paths` entry is any live name of it). Every known
path and every ancestor of one is in `kids` under its parent, so dropping or moving a path
looks only at the paths below it, not at every path the mount has seen.
"""

from __future__ import annotations

from fsmount.fs.inodes import ROOT_INO
from fsmount.overlay.upper import UpperLayer


def _split(path: str) -> tuple[str, str]:
    return (path.rsplit("/", 1)[0], path.rsplit("/", 1)[1]) if "/" in path else ("", path)


class PathInodes:
    """path <-> inode number for one writable mount."""

    def __init__(self, upper: UpperLayer) -> None:
        self.upper = upper  # for the names of hard-link groups (upper.members)
        self.paths: dict[int, str] = {ROOT_INO: ""}
        self.inos: dict[str, int] = {"": ROOT_INO}
        self.kids: dict[str, set[str]] = {}  # parent path -> names of known paths (or their ancestors)
        self.group_ino: dict[str, int] = {}  # hard-link group -> its one inode number
        self.ino_group: dict[int, str] = {}
        self.next_ino = ROOT_INO + 1

    def ino(self, path: str, link: str | None = None) -> int:
        """The inode number of `path` (of its hard-link group `link`), handed out on first sight."""
        ino = self.inos.get(path)
        if link is not None:
            gino = self.group_ino.get(link)
            if gino is None:
                gino = ino if ino is not None and ino not in self.ino_group else None
                if gino is None:
                    gino = self.next_ino
                    self.next_ino += 1
                self.group_ino[link] = gino
                self.ino_group[gino] = link
            if ino != gino:
                if ino is not None and self.paths.get(ino) == path:
                    del self.paths[ino]
                ino = gino
                self._set(path, ino)
            self.paths.setdefault(ino, path)
            return ino
        if ino is None:
            ino = self.next_ino
            self.next_ino += 1
            self._set(path, ino)
            self.paths[ino] = path
        return ino

    def _set(self, path: str, ino: int) -> None:
        """`path` names inode `ino`; `_kids` names every known path and every ancestor of one."""
        if path not in self.inos:
            p = path
            while p:
                parent, name = _split(p)
                kids = self.kids.setdefault(parent, set())
                if name in kids:
                    break
                kids.add(name)
                p = parent
        self.inos[path] = ino

    def _unset(self, path: str) -> int | None:
        ino = self.inos.pop(path, None)
        p = path
        while ino is not None and p and p not in self.inos and p not in self.kids:
            parent, name = _split(p)  # no longer known, nothing known below: out of the index
            kids = self.kids.get(parent)
            if kids is None:
                break
            kids.discard(name)
            if kids:
                break
            del self.kids[parent]
            p = parent
        return ino

    def _known_below(self, path: str) -> list[str]:
        """`path` (if known) and every known path below it, parents first: by the parent index."""
        out = [path] if path in self.inos else []
        stack = [path]
        while stack:
            p = stack.pop()
            for name in list(self.kids.get(p, ())):
                child = f"{p}/{name}" if p else name
                if child in self.inos:
                    out.append(child)
                stack.append(child)
        return out

    def _release_path(self, path: str, ino: int) -> None:
        """`path` no longer names inode `ino`: another name of its hard-link group may."""
        if self.paths.get(ino) != path:
            return
        del self.paths[ino]
        link = self.ino_group.get(ino)
        if link is not None:
            for other in sorted(self.upper.members.get(link, ())):
                if self.inos.get(other) == ino:
                    self.paths[ino] = other
                    return

    def drop(self, path: str) -> None:
        """`path` no longer names what it named: its inode (and those below it) lose their path."""
        for p in self._known_below(path):
            ino = self._unset(p)
            if ino is not None:
                self._release_path(p, ino)

    def moved(self, old: str, new: str) -> None:
        moves = []
        for p in self._known_below(old):
            ino = self._unset(p)
            if ino is not None:
                moves.append((p, new + p[len(old):], ino))
        for p, q, ino in moves:
            self._set(q, ino)
            if self.paths.get(ino) == p:
                self.paths[ino] = q

    def forget(self, ino: int) -> None:
        """The kernel holds no reference to `ino` any more: it loses its paths (not the root)."""
        path = self.paths.pop(ino, None)
        if path is not None and self.inos.get(path) == ino:
            self._unset(path)
        link = self.ino_group.pop(ino, None)
        if link is not None:
            self.group_ino.pop(link, None)
            for other in self.upper.members.get(link, ()):
                if self.inos.get(other) == ino:
                    self._unset(other)

    def join_group(self, ino: int, link: str) -> None:
        """Inode `ino` is (now) hard-link group `link`: its other names get the same number."""
        self.group_ino.setdefault(link, ino)
        self.ino_group.setdefault(ino, link)
