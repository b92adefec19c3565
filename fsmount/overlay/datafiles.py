"""The data files of an overlay (data/<n>, spares made ahead of time) and its space reserve.

Names are increasing numbers (ext4 creates them ~10x faster than random names). A background
thread keeps a few empty files ready, so a create() does not wait for the disk; a spare is
stamped with the time it is taken (its own times are those of the moment it was made). A
removed data file is moved to trash/ (a rename costs the same for 1 KiB and 10 GiB) and
unlinked there by the same thread, so freeing a big file's blocks never stalls the caller;
trash left by a crash is emptied at the next open. A 256 KiB `reserve` file is freed when the
disk is full, so unlink and rename still work.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
from collections.abc import Iterable
from pathlib import Path

log = logging.getLogger(__name__)

SPARES = 32  # empty data files kept ready for create()
RESERVE_BYTES = 256 * 1024  # freed when the disk is full, so unlink and rename still work


class DataFiles:
    """data/ of one overlay folder, its spares and its reserve; thread-safe."""

    def __init__(self, folder: Path, lock: threading.RLock) -> None:
        self.folder = folder
        self.data_dir = folder / "data"
        self.data_dir.mkdir(exist_ok=True, mode=0o700)
        self.trash_dir = folder / "trash"
        self.trash_dir.mkdir(exist_ok=True, mode=0o700)
        self._prefix = f"{self.data_dir}/"
        self._trash: list[str] = []
        self._lock = lock
        self._next_data = 0
        self._reserved = False
        self._closed = False
        self._spares: list[tuple[str, int]] = []
        self._want_spares = threading.Event()
        self._spare_thread: threading.Thread | None = None

    def start(self, used: Iterable[str]) -> None:
        """Remove orphans (files no row names), make the reserve, start the spare thread."""
        self._remove_orphans(set(used))
        self.keep_reserve()
        self._want_spares.set()
        self._spare_thread = threading.Thread(target=self._make_spares, name="overlay-spares", daemon=True)
        self._spare_thread.start()

    # -- space reserve ----------------------------------------------------------------------

    def release_reserve(self) -> bool:
        """Free the reserve file so a metadata change fits on a full disk; False if there is none."""
        if not self._reserved:
            return False
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.folder / "reserve")
        self._reserved = False
        log.warning("overlay %s is out of space: used its reserve for metadata", self.folder)
        return True

    def keep_reserve(self) -> None:
        if self._reserved:
            return
        try:
            fd = os.open(self.folder / "reserve", os.O_WRONLY | os.O_CREAT | os.O_CLOEXEC, 0o600)
            try:
                os.posix_fallocate(fd, 0, RESERVE_BYTES)
            finally:
                os.close(fd)
            self._reserved = True
        except OSError:
            with contextlib.suppress(OSError):
                os.unlink(self.folder / "reserve")

    # -- data files ------------------------------------------------------------------------

    def data_path(self, name: str) -> str:
        return self._prefix + name

    def new_data_file(self) -> tuple[str, int]:
        """An empty data file, its times set to now; returns (name, fd opened read-write)."""
        with self._lock:
            spare = self._spares.pop() if self._spares else None
            if len(self._spares) < SPARES // 2:
                self._want_spares.set()
        if spare is None:
            return self._create_data_file()
        try:
            os.utime(spare[1])  # a spare was made earlier: a new file gets the time of its creation
        except OSError:
            os.close(spare[1])
            self.drop_data(spare[0])
            raise
        return spare

    def _create_data_file(self) -> tuple[str, int]:
        while True:
            with self._lock:
                self._next_data += 1
                name = f"{self._next_data:012d}"
            try:
                fd = os.open(self.data_path(name), os.O_RDWR | os.O_CREAT | os.O_EXCL | os.O_CLOEXEC, 0o600)
            except FileExistsError:
                continue
            return name, fd

    def drop_data_later(self, name: str) -> None:
        """Remove data file `name` without waiting for its blocks to be freed: into trash/ now,
        unlinked by the background thread."""
        try:
            os.rename(self.data_path(name), self.trash_dir / name)
        except FileNotFoundError:
            return
        except OSError:
            self.drop_data(name)
            return
        with self._lock:
            self._trash.append(name)
        self._want_spares.set()

    def _empty_trash(self) -> None:
        with self._lock:
            names, self._trash = self._trash, []
        for name in names:
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.trash_dir / name)

    def _make_spares(self) -> None:
        while not self._closed:
            self._want_spares.wait()
            self._want_spares.clear()
            self._empty_trash()
            while not self._closed and len(self._spares) < SPARES:
                try:
                    spare = self._create_data_file()
                except OSError:
                    break  # out of space or fds: create() makes its own and reports the error
                with self._lock:
                    if self._closed:  # made while closing: no row will ever name it
                        os.close(spare[1])
                        self.drop_data(spare[0])
                        return
                    self._spares.append(spare)

    def open_data(self, name: str) -> int:
        return os.open(self.data_path(name), os.O_RDWR | os.O_CLOEXEC)

    def drop_data(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(self.data_path(name))

    def _remove_orphans(self, used: set[str]) -> None:
        """Data files no row names: left by a crash between creating a file and recording it."""
        for name in os.listdir(self.trash_dir):  # removals a crash interrupted
            with contextlib.suppress(FileNotFoundError):
                os.unlink(self.trash_dir / name)
        names = os.listdir(self.data_dir)
        self._next_data = max((int(n) for n in [*names, *used] if n.isdigit()), default=0)
        for name in names:
            if name not in used:
                log.info("removing orphan overlay data file %s", name)
                self.drop_data(name)

    def sync(self, db_path: Path) -> None:
        """Make every committed row change durable (fsync of the WAL and the data folder)."""
        for p in (f"{db_path}-wal", str(db_path), str(self.data_dir)):
            try:
                fd = os.open(p, os.O_RDONLY)
            except FileNotFoundError:
                continue
            try:
                os.fsync(fd)
            finally:
                os.close(fd)

    def close(self) -> None:
        with self._lock:
            self._closed = True
            spares, self._spares = self._spares, []
        self._want_spares.set()
        if self._spare_thread is not None and self._spare_thread is not threading.current_thread():
            self._spare_thread.join()
        self._empty_trash()
        for name, fd in spares:
            os.close(fd)
            self.drop_data(name)
