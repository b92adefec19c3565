"""fsspec filesystem `fsmount://REF/PATH`: read a version without a FUSE mount, through the verified cache.

Paths are `REF/PATH` with REF as in docs/FORMAT.md §7: `fsmount://cv/pets@1.2.0/labels.csv`,
`fsmount://cv/pets/train/` (the newest final version), `fsmount://<id or prefix>/...`,
`fsmount://tag:TAG/...` (a tag without `/`). Without `@`, the REF is the shortest
`PROJECT/NAME` that names a dataset with a final version, so `cv/pets/train` is path `train` of
`cv/pets` when that dataset exists. A REF is resolved once per filesystem instance (a version
never changes; `invalidate_cache()` forgets which version `cv/pets` meant).

Storage options: `store`, `endpoint_url`, `cache_dir`, `cache_size` (the CLI's, and the same
defaults: $FSMOUNT_STORE, $FSMOUNT_CACHE_DIR, ...), or a ready `workspace`. Read-only.
"""

from __future__ import annotations

import re
from typing import Any

from fsspec.spec import AbstractBufferedFile, AbstractFileSystem
from fsspec.utils import stringify_path

from fsmount.api.workspace import Workspace
from fsmount.cache.fetcher import ObjectReader
from fsmount.cache.file_range import read_file_range
from fsmount.commit import registry
from fsmount.errors import AmbiguousRefError, FsmountError, NotFoundError, StateError, UsageError, errno_of
from fsmount.format.objects import DirEntry, Entry, FileEntry, LinkEntry, SymlinkEntry
from fsmount.format.records import VersionRecord
from fsmount.format.tree_edit import lookup

_SELF_NAMED = re.compile(r"(tag:[^/]+|[0-9a-f]{4,32})")  # a REF that is one path part


def _read(reader: ObjectReader, entry: FileEntry, offset: int, size: int) -> bytes:
    """read_file_range, with fsmount's errors (a corrupt block, a changed external file) as OSError."""
    try:
        return read_file_range(reader, entry, offset, size)
    except FsmountError as e:
        raise OSError(errno_of(e), str(e)) from None


class FsmountFileSystem(AbstractFileSystem):
    """Read-only fsspec view of fsmount versions: ls, info, glob, cat_file (ranges), open (seekable)."""

    protocol = "fsmount"
    root_marker = ""

    def __init__(self, store: str | None = None, endpoint_url: str | None = None,
                 cache_dir: str | None = None, cache_size: str | int | None = None,
                 workspace: Workspace | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.workspace = workspace or Workspace(store, endpoint_url=endpoint_url, cache_dir=cache_dir,
                                                cache_size=cache_size)
        self._refs: dict[str, VersionRecord] = {}

    @classmethod
    def _strip_protocol(cls, path: Any) -> Any:
        if isinstance(path, list):
            return [cls._strip_protocol(p) for p in path]
        path = stringify_path(path)
        for marker in ("fsmount://", "fsmount::"):
            path = path.removeprefix(marker)
        return path.strip("/")

    def invalidate_cache(self, path: str | None = None) -> None:
        self._refs.clear()
        super().invalidate_cache(path)

    # -- REF/PATH -------------------------------------------------------------------------

    def _record(self, ref: str) -> VersionRecord | None:
        rec = self._refs.get(ref)
        if rec is None:
            try:
                st = registry.resolve(self.workspace.store, ref)
            except AmbiguousRefError:
                raise
            except (NotFoundError, UsageError, StateError):
                return None
            rec = self._refs[ref] = registry.readable_record(self.workspace.reader, st)
        return rec

    def _split(self, path: str) -> tuple[str, VersionRecord, str]:
        """(REF as written, its version's record, the path inside the version)."""
        parts = [p for p in self._strip_protocol(path).split("/") if p]
        at = next((k for k, p in enumerate(parts) if "@" in p), None)
        ends = [1] if parts and _SELF_NAMED.fullmatch(parts[0]) else []
        ends += [at + 1] if at is not None else list(range(2, len(parts) + 1))
        for k in ends:
            rec = self._record("/".join(parts[:k]))
            if rec is not None:
                return "/".join(parts[:k]), rec, "/".join(parts[k:])
        raise FileNotFoundError(f"no dataset version in {path!r}")

    def _entry(self, path: str) -> tuple[str, VersionRecord, Entry | None]:
        """(name, record, entry); entry None is the version's root."""
        ref, rec, inner = self._split(path)
        if not inner:
            return ref, rec, None
        e = lookup(self.workspace.reader.tree, rec.root, inner)
        if e is None:
            raise FileNotFoundError(path)
        return f"{ref}/{inner}", rec, e

    @staticmethod
    def _details(name: str, e: Entry | None) -> dict[str, Any]:
        if e is None or isinstance(e, DirEntry):
            return {"name": name, "size": 0, "type": "directory"}
        if isinstance(e, SymlinkEntry):
            return {"name": name, "size": 0, "type": "other", "destination": e.target}
        d = {"name": name, "size": e.size, "type": "file", "mtime": e.mtime_ns / 1e9, "origin": e.origin}
        if e.sha256:
            d["sha256"] = e.sha256.hex()
        if isinstance(e, LinkEntry):
            d["url"] = e.url
        return d

    # -- fsspec's interface ------------------------------------------------------------------

    def info(self, path: str, **kwargs: Any) -> dict[str, Any]:
        name, _, e = self._entry(path)
        return self._details(name, e)

    def ls(self, path: str, detail: bool = True, **kwargs: Any) -> list[Any]:
        name, rec, e = self._entry(path)
        if e is not None and not isinstance(e, DirEntry):
            out = [self._details(name, e)]
        else:
            tree = self.workspace.reader.tree(rec.root if e is None else e.tree)
            out = [self._details(f"{name}/{c.name}", c) for c in tree.entries]
        return out if detail else [d["name"] for d in out]

    def _file(self, path: str) -> FileEntry:
        _, _, e = self._entry(path)
        if isinstance(e, LinkEntry):
            return self.workspace.reader.links.register(e)
        if not isinstance(e, FileEntry):
            raise IsADirectoryError(path) if e is None or isinstance(e, DirEntry) else FileNotFoundError(path)
        return e

    def cat_file(self, path: str, start: int | None = None, end: int | None = None, **kwargs: Any) -> bytes:
        e = self._file(path)
        start = 0 if start is None else start if start >= 0 else max(0, e.size + start)
        end = e.size if end is None else end if end >= 0 else max(0, e.size + end)
        return _read(self.workspace.reader, e, start, end - start)

    def _open(self, path: str, mode: str = "rb", block_size: int | None = None, autocommit: bool = True,
              cache_options: dict[str, Any] | None = None, **kwargs: Any) -> FsmountFile:
        if mode != "rb":
            raise PermissionError(f"fsmount:// is read-only (mode {mode!r})")
        e = self._file(path)
        return FsmountFile(self, path, e, block_size=block_size or e.block_size, cache_options=cache_options,
                           **kwargs)

    def _readonly(self, *args: Any, **kwargs: Any) -> None:
        raise PermissionError("fsmount:// is read-only")

    rm = mkdir = makedirs = rmdir = mv = cp_file = put_file = pipe_file = touch = _readonly


class FsmountFile(AbstractBufferedFile):
    """A seekable read-only file whose ranges come from read_range (blocks from the verified cache)."""

    def __init__(self, fs: FsmountFileSystem, path: str, entry: FileEntry, **kwargs: Any) -> None:
        self.entry = entry
        super().__init__(fs, path, mode="rb", size=entry.size, **kwargs)

    def _fetch_range(self, start: int, end: int) -> bytes:
        return _read(self.fs.workspace.reader, self.entry, start, end - start)
