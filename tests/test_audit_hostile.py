"""Audit of issue 9 ("no input that gets in") on the new paths: hostile link entries, short packs, traversal.

A hostile store writer chooses every URL a reader fetches (store/external.py's trust rule, FORMAT.md §4
"Link entry"): file:// is not read as root without $FSMOUNT_LINK_ALLOW; an http(s) link to a cloud
metadata service or a link-local address is never read unless the allow-list names it; the
allow-list matches scheme, host and port exactly (no "https://host@evil/" smuggling). Ranged
locators past their pack's end, and names that try to leave the copy, are errors, never bytes.
"""

from __future__ import annotations

import hashlib
import os
import uuid
from pathlib import Path

import pytest

from fsmount.api.fsspec_fs import FsmountFileSystem
from fsmount.errors import AccessDenied
from fsmount.format.hashing import object_key
from fsmount.format.objects import (
    DirEntry,
    Entry,
    FileEntry,
    LinkEntry,
    encode_tree,
)
from fsmount.store import open_store
from fsmount.store.external import check_allowed
from tests.helpers import run_cli, write_tree
from tests.pack_fixtures import publish_final

ACCESS_DENIED = 3  # exit code of AccessDenied (fsmount/errors.py)


def hostile_version(store_url: str, entries: list[Entry], blobs: tuple[bytes, ...] = (),
                    name: str = "bad") -> str:
    """A final version whose root tree is `entries` as given (objects `blobs` stored too)."""
    store = open_store(store_url)
    vid = uuid.uuid4().hex
    for b in blobs:
        store.put(object_key(hashlib.sha256(b).digest()), b)
    data = encode_tree(entries)
    root = hashlib.sha256(data).digest()
    store.put(object_key(root), data)
    n = sum(1 for e in entries if not isinstance(e, DirEntry))
    publish_final(store, vid, name, root, n, 0, 4096, author="evil")
    store.close()
    return vid


def _link(name: str, url: str, size: int = 10, tag: str = "x") -> LinkEntry:
    return LinkEntry(name, 0o644, 1, size, url, tag, b"", 4096, (), "0" * 32)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    url = f"file://{tmp_path / 'store'}"
    monkeypatch.setenv("FSMOUNT_STORE", url)
    return url


def _refused(vid: str, tmp: Path, path: str, *words: str) -> None:
    """get --copy, get --files and fsspec all refuse to read `path`, with EACCES and the reason."""
    for argv in (["get", vid, "--copy", str(tmp / uuid.uuid4().hex), "-q"],
                 ["get", vid, "--files", path, "--copy", str(tmp / uuid.uuid4().hex), "-q"]):
        r = run_cli(*argv, check=False, timeout=60)
        assert r.returncode == ACCESS_DENIED, (argv, r.returncode, r.stderr)
        assert "Traceback" not in r.stderr and all(w in r.stderr for w in words), r.stderr
    fs = FsmountFileSystem(store=os.environ["FSMOUNT_STORE"], skip_instance_cache=True)
    try:
        with pytest.raises(PermissionError):
            fs.cat_file(f"{vid}/{path}")
    finally:
        fs.workspace.close()


def test_a_link_to_etc_shadow_is_not_read_as_root(store: str, tmp_path: Path,
                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    assert os.geteuid() == 0, "the suite runs as root (BRIEF.md)"
    secret = write_tree(tmp_path / "secret", {"shadow": b"root:$6$hash:1:0:99999:7:::\n"}) / "shadow"
    allowed = write_tree(tmp_path / "allowed", {"ok.txt": b"fine\n"})
    os.symlink(secret, allowed / "sneaky")
    size = secret.stat().st_size
    st = secret.stat()
    tag = f"{st.st_mtime_ns}:{st.st_size}"
    vid = hostile_version(store, [_link("shadow", "file:///etc/shadow"),
                                  _link("copy", f"file://{secret}", size, tag)])
    _refused(vid, tmp_path, "shadow", "not read as root")
    # an allow-list: a symlink or '..' out of it is resolved first and refused
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", f"file://{allowed}")
    vid2 = hostile_version(store, [_link("a", f"file://{allowed}/sneaky", size, tag)], name="bad2")
    _refused(vid2, tmp_path, "a", "FSMOUNT_LINK_ALLOW")
    vid3 = hostile_version(store, [_link("b", f"file://{allowed}/../secret/shadow", size, tag)], name="bad3")
    _refused(vid3, tmp_path, "b", "FSMOUNT_LINK_ALLOW")


@pytest.mark.parametrize("url", [
    "http://169.254.169.254/latest/meta-data/iam/security-credentials/role",
    "http://[fe80::1]/x",
    "http://metadata.google.internal/computeMetadata/v1/instance/service-accounts/default/token",
    "http://[::ffff:169.254.169.254]/latest/",
])
def test_a_link_to_a_metadata_service_is_never_fetched(store: str, tmp_path: Path, url: str) -> None:
    """Unset FSMOUNT_LINK_ALLOW reads any http(s) link, but not instance credentials (refused up front,
    without a connection)."""
    vid = hostile_version(store, [_link("creds", url)])
    _refused(vid, tmp_path, "creds", "metadata service" if "metadata" in url else "link-local")


def test_the_allow_list_matches_hosts_not_string_prefixes(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", "https://data.example.com s3://raw-bucket http://127.0.0.1:9000/pub/")
    for ok in ("https://data.example.com/a/b.bin", "s3://raw-bucket/x/y", "http://127.0.0.1:9000/pub/z"):
        check_allowed(ok)
    for bad in ("https://data.example.com@169.254.169.254/latest",  # user info naming the allowed host
                "https://data.example.com.evil.org/x",
                "s3://raw-bucket-other/secret",
                "http://127.0.0.1:9000/pub/../admin",
                "http://127.0.0.1:9000/pub/%2e%2e/admin",
                "http://127.0.0.1:9001/pub/z",
                "file:///etc/shadow"):
        with pytest.raises(AccessDenied):
            check_allowed(bad)
    # the allow-list may name a metadata address on purpose
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", "http://169.254.169.254/latest/")
    check_allowed("http://169.254.169.254/latest/x")
    with pytest.raises(AccessDenied):
        check_allowed("http://169.254.169.254/other")


def test_a_locator_past_its_packs_end_is_an_error_not_a_short_file(store: str, tmp_path: Path) -> None:
    pack = os.urandom(3000)
    h = hashlib.sha256(pack).digest()
    good = pack[:1000]
    past = pack[2500:3000] + b"\0" * 500  # claims 1000 bytes at 2500: 500 past the end
    z = "0" * 32
    e_good = FileEntry("good.bin", 0o644, 1, 1000, hashlib.sha256(good).digest(), 4096, ((h, 0, 1000),), z)
    e_past = FileEntry("past.bin", 0o644, 1, 1000, hashlib.sha256(past).digest(), 4096, ((h, 2500, 1000),), z)
    e_huge = FileEntry("huge.bin", 0o644, 1, 2**40, bytes(32), 4096, ((h, 0, 2**40),), "0" * 32)
    vid = hostile_version(store, [e_good, e_huge, e_past], (pack,))
    for path in ("past.bin", "huge.bin"):
        for argv in (["get", vid, "--files", path, "--copy", str(tmp_path / uuid.uuid4().hex), "-q"],
                     ["get", vid, "--part", "0", "--num-parts", "1", "--copy",
                      str(tmp_path / uuid.uuid4().hex), "-q"]):
            r = run_cli(*argv, check=False)
            assert r.returncode not in (0, 70) and "Traceback" not in r.stderr, (argv, r.stderr)
        fs = FsmountFileSystem(store=store, skip_instance_cache=True)
        try:
            with pytest.raises(OSError):
                fs.cat_file(f"{vid}/{path}")
            assert fs.cat_file(f"{vid}/good.bin") == good
        finally:
            fs.workspace.close()
    r = run_cli("get", vid, "--files", "good.bin", "--copy", str(tmp_path / "g"), "-q")
    assert (tmp_path / "g/good.bin").read_bytes() == good


@pytest.mark.parametrize("pattern", ["../*", "/etc/*", "../../**", "..", "./../x"])
def test_files_patterns_never_leave_the_copy(store: str, tmp_path: Path, pattern: str) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"a\n", "d/b.txt": b"b\n"})
    vid = run_cli("sync", "--folder", str(src), "--project", "p", "--name", "ok", "-q", "--json").stdout
    vid = __import__("json").loads(vid)["id"]
    before = sorted(os.listdir(tmp_path))
    r = run_cli("get", vid, "--files", pattern, "--copy", str(tmp_path / "sel" / "c"), "-q", check=False)
    assert "Traceback" not in r.stderr and r.returncode != 70, r.stderr
    assert set(os.listdir(tmp_path)) <= set(before) | {"sel"}
    made = [p for p in (tmp_path / "sel").rglob("*")] if (tmp_path / "sel").exists() else []
    assert all(str(p).startswith(str(tmp_path / "sel" / "c")) for p in made), made
