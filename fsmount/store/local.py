"""file:// object store: one file per object under a root folder (local disk or NFS)."""

from __future__ import annotations

import contextlib
import ctypes
import errno
import fcntl
import hashlib
import logging
import os
from collections.abc import Iterator
from pathlib import Path

from fsmount import config
from fsmount.errors import ObjectNotFound, PreconditionFailed, StoreError
from fsmount.store.base import ObjectInfo, ObjectStore, content_hash

log = logging.getLogger(__name__)

_TMP_PREFIX = ".tmp-"
_libc = ctypes.CDLL(None, use_errno=True)
# statfs(2) f_type of file systems whose files live on another machine (or behind FUSE): a store
# there is copied into the local cache; anywhere else it is read in place (docs/SEMANTICS.md).
NETWORK_FS_TYPES = {
    0x6969: "nfs", 0xFF534D42: "cifs", 0xFE534D42: "smb2", 0x517B: "smb", 0x65735546: "fuse",
    0x00C36400: "ceph", 0x01021997: "9p", 0x5346414F: "afs", 0x0BD00BD0: "lustre", 0x01161970: "gfs2",
    0x47504653: "gpfs", 0x013111A8: "ibrix", 0x6B414653: "kafs",
}


def fs_type(path: str | os.PathLike[str]) -> int | None:
    """statfs(2) f_type of the file system holding `path`, or None if it cannot be asked."""
    buf = ctypes.create_string_buffer(256)  # struct statfs is 120 bytes on x86-64; f_type comes first
    if _libc.statfs(os.fsencode(path), buf) != 0:
        return None
    return ctypes.c_long.from_buffer(buf).value & 0xFFFFFFFF


def _etag(data: bytes) -> str:
    return hashlib.md5(data, usedforsecurity=False).hexdigest()


class LocalStore(ObjectStore):
    """Objects are files; write-once via link(2), conditional writes via flock + rename."""

    def __init__(self, root: str | os.PathLike[str]) -> None:
        self.root = Path(root)
        self.url = f"file://{self.root}"
        try:
            self.root.mkdir(parents=True, exist_ok=True)
        except OSError as e:
            raise StoreError(f"cannot create store folder {self.root}: {e.strerror}") from e
        if not os.access(self.root, os.W_OK | os.X_OK):
            log.debug("store folder %s is not writable; read-only use only", self.root)
        kind = fs_type(self.root)
        self.network_fs = "unknown" if kind is None else NETWORK_FS_TYPES.get(kind)
        self.in_place = self.network_fs is None and not config.cache_local_store()

    def _path(self, key: str) -> Path:
        return self.root / key

    def get(self, key: str) -> bytes:
        try:
            with open(self._path(key), "rb") as f:
                return f.read()
        except FileNotFoundError:
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None

    def local_path(self, key: str) -> str | None:
        """Objects of a store on a local disk are read in place (unless FSMOUNT_CACHE_LOCAL_STORE=1)."""
        return str(self._path(key)) if self.in_place else None

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        try:
            fd = os.open(self._path(key), os.O_RDONLY)
        except FileNotFoundError:
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None
        try:
            return os.pread(fd, length, offset)
        finally:
            os.close(fd)

    def head(self, key: str) -> ObjectInfo | None:
        try:
            st = os.stat(self._path(key))
        except FileNotFoundError:
            return None
        return ObjectInfo(key, st.st_size, st.st_mtime)

    def _write_tmp(self, path: Path, data: bytes) -> Path:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.parent / f"{_TMP_PREFIX}{path.name}.{os.getpid()}.{id(data):x}.{os.urandom(4).hex()}"
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644)
        try:
            view = memoryview(data)
            while view:
                n = os.write(fd, view)
                view = view[n:]
        except BaseException:
            os.close(fd)
            tmp.unlink(missing_ok=True)
            raise
        os.close(fd)
        return tmp

    def put(self, key: str, data: bytes) -> bool:
        path = self._path(key)
        meant = content_hash(key)
        info = self.head(key)
        if info is not None and (meant is None or self.is_intact(info, len(data), meant)):
            return False
        tmp = self._write_tmp(path, data)
        try:
            if info is not None:  # a damaged object (a short file): replace it in one step
                os.replace(tmp, path)
                return True
            return self._link(key, path, tmp, meant, len(data))
        finally:
            tmp.unlink(missing_ok=True)

    def _link(self, key: str, path: Path, tmp: Path, meant: bytes | None, size: int) -> bool:
        """Publish `tmp` at `path` unless a good object is there (link(2) fails if present)."""
        for _ in range(3):
            try:
                os.link(tmp, path)
                return True
            except FileExistsError:
                info = self.head(key)
                if info is None:
                    continue  # deleted since: try again
                if meant is None or self.is_intact(info, size, meant):
                    return False
                os.replace(tmp, path)
                return True
            except OSError as e:
                if e.errno != errno.EPERM:  # some network filesystems refuse hard links
                    raise
                info = self.head(key)
                if info is not None and (meant is None or self.is_intact(info, size, meant)):
                    return False
                os.rename(tmp, path)
                return True
        return False

    def _replace(self, key: str, data: bytes) -> None:
        path = self._path(key)
        tmp = self._write_tmp(path, data)
        try:
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        finally:
            tmp.unlink(missing_ok=True)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        data = self.get(key)
        return data, _etag(data)

    @contextlib.contextmanager
    def _locked(self, key: str) -> Iterator[None]:
        # 64 lock files in all, whatever the keys: lock objects with unique names don't pile up.
        stripe = hashlib.sha256(key.encode()).digest()[0] % 64
        lock_path = self.root / ".locks" / f"{stripe:02d}"
        lock_path.parent.mkdir(parents=True, exist_ok=True)
        fd = os.open(lock_path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX)
            yield
        finally:
            os.close(fd)

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        path = self._path(key)
        with self._locked(key):
            try:
                current = _etag(path.read_bytes())
            except FileNotFoundError:
                current = None
            if current != if_match:
                raise PreconditionFailed(f"{key} changed concurrently")
            tmp = self._write_tmp(path, data)
            with open(tmp, "rb") as f:
                os.fsync(f.fileno())
            os.replace(tmp, path)
        return _etag(data)

    def delete(self, key: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._path(key).unlink()

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        # Walk only the folder the prefix names, then filter by the remainder.
        head, _, _ = prefix.rpartition("/")
        base = self.root / head if head else self.root
        if not base.is_dir():
            return
        root_len = len(str(self.root)) + 1
        for dirpath, dirnames, filenames in os.walk(base):
            dirnames[:] = [d for d in dirnames if not d.startswith(".")]
            for name in filenames:
                if name.startswith("."):
                    continue
                full = os.path.join(dirpath, name)
                key = full[root_len:]
                if not key.startswith(prefix):
                    continue
                try:
                    st = os.stat(full)
                except FileNotFoundError:
                    continue
                yield ObjectInfo(key, st.st_size, st.st_mtime)

    def barrier(self) -> None:
        """Make every object written so far durable before anything that references it."""
        fd = os.open(self.root, os.O_RDONLY)
        try:
            if _libc.syncfs(fd) != 0:
                err = ctypes.get_errno()
                raise OSError(err, os.strerror(err))
        finally:
            os.close(fd)
