"""Audit of issue 9 ("modes from the store grant nothing", "bad input: one line") on the new paths.

A hostile tree's setuid, setgid and sticky bits on a packed file, an external file and a directory
give nothing in `get`, `get --copy`, `get --part` / `--files` copies or a mount; a read-only copy is
never writable by others. Bad input to the verbs added since issue 9 (warm, squash, rename,
metadata, search, compare, get --part, ui, verify --folder) is one line on stderr, a non-zero exit
other than 70 (internal error), never a traceback.
"""

from __future__ import annotations

import hashlib
import os
import stat
import subprocess
import uuid
from pathlib import Path

import pytest

from fsmount.format.objects import DirEntry, FileEntry, LinkEntry, encode_tree
from fsmount.store import open_store
from tests.fs_helpers import cli_mount
from tests.helpers import run_cli, run_json, write_tree
from tests.test_audit_hostile import hostile_version

SPECIAL = stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX


def _modes(root: Path) -> dict[str, int]:
    out = {}
    for dirpath, dirnames, filenames in os.walk(root):
        for n in dirnames + filenames:
            p = Path(dirpath) / n
            out[str(p.relative_to(root))] = p.lstat().st_mode
    return out


def test_setuid_bits_from_the_store_grant_nothing_on_new_paths(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, require_fuse: None) -> None:
    store = f"file://{tmp_path / 'store'}"
    monkeypatch.setenv("FSMOUNT_STORE", store)
    src = write_tree(tmp_path / "src", {"ext.bin": b"#!/bin/sh\necho external\n"})
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", f"file://{src}")
    pack = b"#!/bin/sh\necho packed\n" + b"#!/bin/sh\necho other\n"
    h = hashlib.sha256(pack).digest()
    one, two = pack[:23], pack[23:]
    z = "0" * 32
    st = (src / "ext.bin").stat()
    sub = encode_tree([FileEntry("inner", 0o6777, 1, len(two), hashlib.sha256(two).digest(), 4096,
                                 ((h, 23, len(two)),), z)])
    sub_h = hashlib.sha256(sub).digest()
    open_store(store).put("objects/" + sub_h.hex()[:2] + "/" + sub_h.hex(), sub)
    vid = hostile_version(store, [
        FileEntry("packed", 0o4755, 1, len(one), hashlib.sha256(one).digest(), 4096, ((h, 0, len(one)),), z),
        LinkEntry("ext", 0o6755, 1, st.st_size, f"file://{src}/ext.bin", f"{st.st_mtime_ns}:{st.st_size}",
                  b"", 4096, (), z),
        DirEntry("open", 0o1777, 1, sub_h, 1, len(two)),
    ], (pack,))
    copies = {
        "get": Path(run_cli("get", vid, "-q").stdout.strip().splitlines()[-1]),
        "get --part": Path(run_cli("get", vid, "--part", "0", "--num-parts", "1", "-q").stdout.strip()
                           .splitlines()[-1]),
    }
    for what, argv in {"get --copy": [], "get --files": ["--files", "**"],
                       "get --part --copy": ["--part", "0", "--num-parts", "1"]}.items():
        dest = tmp_path / uuid.uuid4().hex
        run_cli("get", vid, *argv, "--copy", str(dest), "-q")
        copies[what] = dest
    for what, root in copies.items():
        modes = _modes(root)
        assert set(modes) == {"packed", "ext", "open", "open/inner"}, (what, modes)
        for rel, mode in modes.items():
            assert not mode & SPECIAL, f"{what}: {rel} is {oct(mode)}"
            if what in ("get", "get --part"):  # read-only copies are read-only for everyone
                assert not mode & 0o222, f"{what}: {rel} is {oct(mode)}"
        assert (root / "packed").read_bytes() == one and (root / "open/inner").read_bytes() == two
    with cli_mount(vid, tmp_path / "mnt", store, tmp_path / "mcache") as mnt:
        for rel in ("packed", "ext", "open", "open/inner"):
            assert not (mnt / rel).lstat().st_mode & SPECIAL, rel


@pytest.fixture
def version(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    monkeypatch.setenv("FSMOUNT_STORE", f"file://{tmp_path / 'store'}")
    src = write_tree(tmp_path / "src", {"a.txt": "a", "d/b.txt": "b"})
    return str(run_json("sync", "--folder", str(src), "--project", "b", "--name", "d")["id"])


def _bad(*argv: str, timeout: float = 60) -> subprocess.CompletedProcess[str]:
    r = run_cli(*argv, check=False, timeout=timeout)
    lines = r.stderr.strip().splitlines()
    assert r.returncode not in (0, 70), (argv, r.returncode, r.stderr)
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr, (argv, r.stderr)
    assert len(lines) == 1, (argv, r.stderr)
    return r


BAD_ARGS = [
    ["warm", "b/nosuch"], ["warm", "{v}", "no/such/path"], ["warm", "b/d@"],
    ["squash", "{v}", "{v}", "--name", "s"], ["squash", "{v}", "--name", "bad\nname"],
    ["squash", "{v}", "--name", "s", "--version", "\t"], ["squash", "b/nosuch", "--name", "s"],
    ["rename", "--project", "b", "--name", "d", "--new-name", "a\tb"],
    ["rename", "--project", "b", "--name", "nosuch", "--new-name", "x"],
    ["rename", "--project", "b", "--name", "d", "--new-name", "x" * 5000],
    ["metadata", "{v}", "--set", "m", "/no/such/file"], ["metadata", "{v}", "--get", "nosuch"],
    ["metadata", "{v}", "--set", "m", "{src}"], ["metadata", "{v}", "--set", "m\n", "{src}/a.txt"],
    ["search", "--name", "("], ["search", "--name", "a{{99999999999}}"], ["search", "--name", "(" * 100_000],
    ["compare", "{v}", "b/nosuch"], ["compare", "b/d@", "{v}"],
    ["get", "{v}", "--part", "2", "--num-parts", "2"], ["get", "{v}", "--part", "0", "--num-parts", "0"],
    ["get", "{v}", "--part", "0"], ["get", "{v}", "--part", "0", "--num-parts", "9" * 40],
    ["get", "{v}", "--files", "/"], ["verify", "{v}", "--folder", "/no/such/dir"],
    ["verify", "{v}", "--repair"],
    ["ui", "--host", "0.0.0.0", "--port", "0"], ["ui", "--host", "not a host", "--port", "0", "--token", "t"],
    ["ui", "--port", "0", "--preview-limit", "lots"], ["ui", "--port", "0", "--preview-limit", "9" * 400],
    ["ui", "--port", "0", "--token-file", "/no/such/file"],
]


def test_bad_input_on_new_verbs_is_one_line(version: str, tmp_path: Path) -> None:
    failures = []
    for argv in BAD_ARGS:
        try:
            _bad(*[a.format(v=version, src=tmp_path / "src") for a in argv], timeout=30)
        except AssertionError as e:
            failures.append(str(e)[:300])
    assert not failures, "\n".join(failures)


# click's own checks (types, ranges, missing arguments) print its four-line usage block
CLICK_ARGS = [["warm", "{v}", "--workers", "0"], ["squash", "--name", "s"], ["ui", "--port", "70000"],
              ["ui", "--port", "-1"], ["metadata", "{v}", "--set", "m", "{src}/a.txt", "--kind", "bogus"],
              ["get", "{v}", "--num-parts", "abc"]]


def test_click_usage_errors_are_clean(version: str, tmp_path: Path) -> None:
    """Exit 2 with one line naming the problem and where help is, no traceback."""
    for argv in CLICK_ARGS:
        r = run_cli(*[a.format(v=version, src=tmp_path / "src") for a in argv], check=False, timeout=30)
        assert r.returncode == 2 and "Traceback" not in r.stderr, r.stderr
        lines = r.stderr.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("fsmount: error: ") and "--help" in lines[0], r.stderr


def test_click_usage_errors_are_one_line(version: str) -> None:
    r = run_cli("warm", version, "--workers", "0", check=False)
    assert len(r.stderr.strip().splitlines()) == 1, r.stderr
