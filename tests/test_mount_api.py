"""Mounts from Python (a writable mount's diff, commit, discard; finding a CLI mount) and the launcher's
independence from the current folder."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import sysconfig
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.errors import UsageError
from fsmount.fs import Mount, mounted
from fsmount.fs.mountpoint import is_mounted
from tests.fs_helpers import cli_mount, force_unmount
from tests.helpers import run_cli, write_tree

pytestmark = [pytest.mark.fuse, pytest.mark.usefixtures("require_fuse")]
ROOT = Path(__file__).resolve().parent.parent
SITE = Path(sysconfig.get_paths()["purelib"])  # this environment's site-packages: the dependencies


@pytest.fixture
def version(file_store_url: str, tmp_path: Path) -> str:
    ds = Dataset.create("api", "ops", store=file_store_url)
    ds.add_files(write_tree(tmp_path / "src", {"a.txt": "alpha\n", "d/b.txt": "beta\n"}))
    ds.finalize()
    return ds.id


def test_writable_mount_from_python(version: str, file_store_url: str, tmp_path: Path) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    try:
        with mounted(version, mnt, store=file_store_url, cache_dir=str(tmp_path / "cache"), write=True,
                     overlay=str(tmp_path / "overlay")) as m:
            assert m.diff()["added"] == [] and m.commit("nothing")["id"] is None
            (mnt / "new.txt").write_text("new\n")
            (mnt / "a.txt").write_text("changed\n")
            pending = m.diff()
            assert (pending["added"], pending["modified"], pending["removed"]) == (["new.txt"], ["a.txt"], [])
            done = m.commit("from python", tags=["api"])
            assert done["id"] and done["parent"] == version and done["files"] == 3
            assert m.diff()["added"] == [] and m.status()["counters"]["version"] == done["id"]
            child = Dataset.get(dataset_id=done["id"], store=file_store_url)
            assert child.tags == ["api"] and sorted(child.list_files()) == ["a.txt", "d/b.txt", "new.txt"]
            (mnt / "d" / "b.txt").unlink()
            (mnt / "scratch").write_text("x")
            assert m.discard() == 3  # the unlink, the new file, and d/'s new mtime (a row of its own)
            assert m.diff()["removed"] == [] and (mnt / "d" / "b.txt").read_text() == "beta\n"
            assert not (mnt / "scratch").exists()
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)


def test_a_cli_mount_is_found_from_python(version: str, file_store_url: str, tmp_path: Path) -> None:
    with cli_mount(version, tmp_path / "mnt", file_store_url, tmp_path / "cache", "--write") as mnt:
        m = Mount.find(mnt)
        assert m.path == str(mnt) and m.info()["version"] == version
        (mnt / "x.txt").write_text("x")
        assert m.diff()["added"] == ["x.txt"]
        assert m.commit("cli mount, python commit")["parent"] == version
        assert run_cli("diff", str(mnt)).stdout.strip() == "no pending changes"
    with pytest.raises(UsageError, match="is not an fsmount mount"):
        Mount.find(tmp_path)


def test_read_only_mount_refuses_commit(version: str, file_store_url: str, tmp_path: Path) -> None:
    with cli_mount(version, tmp_path / "mnt", file_store_url, tmp_path / "cache") as mnt:
        with pytest.raises(UsageError, match="read-only") as e:
            Mount.find(mnt).commit("no")
        assert e.value.exit_code == 2


@pytest.fixture(scope="module")
def pip_installed(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """fsmount as `pip install .` leaves it (no editable finder to rescue a shadowed import): a venv
    whose site-packages holds a copy of fsmount/ and cli/ as fsmount/cli/, the dependencies from
    this environment, and an `fsmount` console script. Returns the script."""
    venv = tmp_path_factory.mktemp("installed") / "venv"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=120)
    site = Path(subprocess.run([str(venv / "bin" / "python"), "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"], check=True, capture_output=True,
                               text=True).stdout.strip())
    (site / "deps.pth").write_text(f"{SITE}\n")  # a plain path: the editable install's .pth is not read
    ignore = shutil.ignore_patterns("__pycache__")
    shutil.copytree(ROOT / "fsmount", site / "fsmount", ignore=ignore)
    shutil.copytree(ROOT / "cli", site / "fsmount" / "cli", ignore=ignore)
    script = venv / "bin" / "fsmount"
    script.write_text(f"#!{venv / 'bin' / 'python'}\nfrom fsmount.cli.main import entry\nentry()\n")
    script.chmod(0o755)
    return script


@pytest.mark.parametrize("where", ["shadowing", "repo"])
def test_mount_works_whatever_the_current_folder(where: str, version: str, file_store_url: str,
                                                 tmp_path: Path, pip_installed: Path) -> None:
    """A folder holding a `fsmount/` package (a checkout of this repository, say) must not shadow
    the installed fsmount in the daemon."""
    if where == "shadowing":
        cwd = tmp_path / "checkout"
        (cwd / "fsmount").mkdir(parents=True)
        (cwd / "fsmount" / "__init__.py").write_text("")
    else:
        cwd = ROOT
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    try:
        r = subprocess.run([str(pip_installed), "mount", version, str(mnt), "--store", file_store_url,
                            "--cache-dir", str(tmp_path / "cache")], cwd=cwd, env=env, capture_output=True,
                           text=True, timeout=120, stdin=subprocess.DEVNULL)
        assert r.returncode == 0, r.stderr
        assert is_mounted(mnt) and (mnt / "a.txt").read_text() == "alpha\n"
        assert subprocess.run([str(pip_installed), "umount", str(mnt)], cwd=cwd, env=env,
                              capture_output=True, timeout=60).returncode == 0
        assert not is_mounted(mnt)
    finally:
        force_unmount(mnt)
