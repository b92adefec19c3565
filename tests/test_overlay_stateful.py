"""Hypothesis drives the merged view and a plain directory with the same operations and compares them.

After every step the two trees must match (paths, kinds, modes, sizes, contents, symlink
targets) and every failed operation must fail with the same errno. Commits happen as a
random step and at the end; the committed version's tree must match the reference too.
"""

from __future__ import annotations

import errno
import hashlib
import os
import shutil
import stat
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.check.store_check import check_store
from fsmount.errors import FsError
from fsmount.format.objects import DirEntry, FileEntry, SymlinkEntry
from fsmount.format.tree_edit import walk_tree
from fsmount.overlay.commit import commit_upper
from fsmount.overlay.merged import MergedView
from fsmount.overlay.upper import UpperLayer
from fsmount.overlay.upper_check import check_upper_folder
from tests.helpers import write_tree

NAMES = ["a", "b", "c"]
PATHS = NAMES + [f"{x}/{y}" for x in NAMES for y in NAMES] + [f"{x}/{y}/{z}" for x in NAMES[:2]
                                                              for y in NAMES for z in NAMES[:2]]
BASE: dict[str, bytes | str] = {
    "a/b": b"lower a/b " * 50,
    "a/c/a": b"deep",
    "a/c/b": b"",
    "b": bytes(range(200)) * 30,
    "c/": b"",
    "c/a/a": b"ca",
    "a/a": "->../b",
}
S_IFMT_KIND = {stat.S_IFREG: "f", stat.S_IFDIR: "d", stat.S_IFLNK: "l"}
paths = st.sampled_from(PATHS)
data = st.binary(min_size=0, max_size=300)
offsets = st.sampled_from([0, 1, 10, 500, 6000, 9000])


def ref_tree(root: Path) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for name in dirnames + filenames:
            full = os.path.join(dirpath, name)
            rel = os.path.relpath(full, root)
            st_ = os.lstat(full)
            if stat.S_ISLNK(st_.st_mode):
                out[rel] = ("l", os.readlink(full))
            elif stat.S_ISDIR(st_.st_mode):
                out[rel] = ("d", stat.S_IMODE(st_.st_mode))
            else:
                out[rel] = ("f", stat.S_IMODE(st_.st_mode), st_.st_size,
                            hashlib.sha256(Path(full).read_bytes()).hexdigest())
    return out


def view_tree(v: MergedView, path: str = "") -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for name, n in v.readdir(path):
        p = f"{path}/{name}" if path else name
        kind = S_IFMT_KIND[stat.S_IFMT(n.st_mode)]
        if kind == "l":
            out[p] = ("l", v.readlink(p))
        elif kind == "d":
            out[p] = ("d", n.mode)
            out.update(view_tree(v, p))
        else:
            fh = v.open(p)
            body = v.read(fh, 0, 1 << 30)
            v.release(fh)
            assert len(body) == n.size, p
            out[p] = ("f", n.mode, n.size, hashlib.sha256(body).hexdigest())
    return out


def version_tree(ws: Workspace, root: bytes, v: MergedView) -> dict[str, tuple[Any, ...]]:
    out: dict[str, tuple[Any, ...]] = {}
    for p, e in walk_tree(ws.reader.tree, root):
        if isinstance(e, DirEntry):
            out[p] = ("d", e.mode)
        elif isinstance(e, SymlinkEntry):
            out[p] = ("l", e.target)
        else:
            assert isinstance(e, FileEntry)
            body = v.read_lower(e, 0, e.size)
            assert hashlib.sha256(body).digest() == e.sha256
            out[p] = ("f", e.mode, e.size, hashlib.sha256(body).hexdigest())
    return out


class OverlayMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        os.umask(0o022)
        self.tmp = Path(tempfile.mkdtemp(prefix="ovsm-"))
        self.ws = Workspace(f"file://{self.tmp / 'store'}", cache_dir=self.tmp / "cache")
        src = write_tree(self.tmp / "src", BASE)
        ds = Dataset.create("sm", "proj", workspace=self.ws)
        ds.add_files(src)
        ds.finalize()
        self.ref = self.tmp / "ref"
        shutil.copytree(src, self.ref, symlinks=True)
        self.upper = UpperLayer(self.tmp / "overlay")
        self.upper.bind(ds.id, ds.record.root)
        self.view = MergedView(self.upper, self.ws.reader, ds.record.root)

    def teardown(self) -> None:
        try:
            assert check_upper_folder(self.upper.folder, self.ws.reader.tree, live=True) == []
            self._commit()
            assert check_store(self.ws.store, read_data=True).problems == []
        finally:
            self.upper.close()
            self.ws.close()
            shutil.rmtree(self.tmp, ignore_errors=True)

    # -- helpers ----------------------------------------------------------------------

    def _r(self, p: str) -> str:
        return str(self.ref / p)

    def _through_symlink(self, *ps: str) -> bool:
        """A path whose ancestor is a symlink: the kernel would follow it; the view does not."""
        for p in ps:
            parts = p.split("/")
            for i in range(1, len(parts)):
                if os.path.islink(self._r("/".join(parts[:i]))):
                    return True
        return False

    def both(self, ref: Callable[[], Any], mine: Callable[[], Any]) -> None:
        try:
            ref()
            want = 0
        except OSError as e:
            want = e.errno or -1
        try:
            mine()
            got = 0
        except FsError as e:
            got = e.errno
        except OSError as e:
            got = e.errno or -1
        names = errno.errorcode
        assert got == want, f"errno {names.get(got, got)} != reference {names.get(want, want)}"

    # -- rules ----------------------------------------------------------------------------

    @rule(p=paths, offset=offsets, body=data, create=st.booleans())
    def write(self, p: str, offset: int, body: bytes, create: bool) -> None:
        if self._through_symlink(p):
            return

        def ref() -> None:
            fd = os.open(self._r(p), os.O_WRONLY | os.O_NOFOLLOW | (os.O_CREAT if create else 0), 0o644)
            try:
                os.pwrite(fd, body, offset)
            finally:
                os.close(fd)

        def mine() -> None:
            v = self.view
            fh = v.create(p, 0o644) if create and not v.exists(p) else v.open(p, os.O_WRONLY)
            try:
                v.write(fh, offset, body)
            finally:
                v.release(fh)

        self.both(ref, mine)

    @rule(p=paths, size=st.sampled_from([0, 3, 100, 7000]))
    def truncate(self, p: str, size: int) -> None:
        if self._through_symlink(p) or os.path.islink(self._r(p)):
            return
        self.both(lambda: os.truncate(self._r(p), size), lambda: self.view.truncate(p, size))

    @rule(p=paths)
    def unlink(self, p: str) -> None:
        if self._through_symlink(p):
            return
        self.both(lambda: os.unlink(self._r(p)), lambda: self.view.unlink(p))

    @rule(p=paths)
    def mkdir(self, p: str) -> None:
        if self._through_symlink(p):
            return
        self.both(lambda: os.mkdir(self._r(p), 0o755), lambda: self.view.mkdir(p, 0o755))

    @rule(p=paths)
    def rmdir(self, p: str) -> None:
        if self._through_symlink(p):
            return
        self.both(lambda: os.rmdir(self._r(p)), lambda: self.view.rmdir(p))

    @rule(old=paths, new=paths)
    def rename(self, old: str, new: str) -> None:
        if self._through_symlink(old, new):
            return
        self.both(lambda: os.rename(self._r(old), self._r(new)), lambda: self.view.rename(old, new))

    @rule(p=paths, mode=st.sampled_from([0o600, 0o644, 0o755, 0o700]))
    def chmod(self, p: str, mode: int) -> None:
        if self._through_symlink(p) or os.path.islink(self._r(p)):
            return
        self.both(lambda: os.chmod(self._r(p), mode), lambda: self.view.chmod(p, mode))

    @rule(p=paths, dest=st.sampled_from(["a", "../b", "/nonexistent/x", "c/a"]))
    def symlink(self, p: str, dest: str) -> None:
        if self._through_symlink(p):
            return
        self.both(lambda: os.symlink(dest, self._r(p)), lambda: self.view.symlink(p, dest))

    @rule()
    def commit(self) -> None:
        self._commit()

    def _commit(self) -> None:
        result = commit_upper(self.upper, self.ws)
        if result.record is not None:
            assert version_tree(self.ws, result.record.root, self.view) == ref_tree(self.ref)
            self.view.rebase(result.record.root, 0)
        assert self.upper.is_empty()

    @invariant()
    def same_tree(self) -> None:
        assert view_tree(self.view) == ref_tree(self.ref)


OverlayMachine.TestCase.settings = settings(
    max_examples=int(os.environ.get("OVERLAY_EXAMPLES", "40")), stateful_step_count=25, deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
)
TestOverlayStateful = OverlayMachine.TestCase
