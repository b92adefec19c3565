"""`fsmount ui` over plain HTTP, the server run for real: pages, 404s, traversal, previews, token, host."""

from __future__ import annotations

import hashlib
import http.client
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from fsmount.api.dataset import Dataset
from fsmount.fs.launcher import mounted
from fsmount.fs.mountpoint import is_mounted

from .ui_helpers import Lineage, UiServer, make_lineage

TOKEN = "s3cret-token-for-tests"


@pytest.fixture(scope="module")
def lineage(tmp_path_factory: pytest.TempPathFactory) -> Lineage:
    tmp = tmp_path_factory.mktemp("ui-http")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("XDG_DATA_HOME", str(tmp / "data"))  # drafts of the build stay in the test's folder
        return make_lineage(tmp)


@pytest.fixture(scope="module")
def server(lineage: Lineage, tmp_path_factory: pytest.TempPathFactory) -> Iterator[UiServer]:
    tmp = tmp_path_factory.mktemp("ui-http-server")
    env = {**os.environ, "XDG_DATA_HOME": str(tmp / "data"), "FSMOUNT_RUNTIME_DIR": str(tmp / "run")}
    s = UiServer(lineage.store, tmp / "cache", "--preview-limit", "4KiB", env=env)
    yield s
    s.stop()


@pytest.fixture
def client(server: UiServer) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=server.url, timeout=30) as c:
        yield c


def test_pages_answer(client: httpx.Client, lineage: Lineage) -> None:
    r = client.get("/")
    assert r.status_code == 200 and "cats-and-birds" in r.text and "birds" in r.text
    assert r.headers["content-security-policy"].startswith("default-src 'none'")
    r = client.get("/", params={"q": "birds"})
    assert "cats-and-birds" in r.text and ">cats<" not in r.text
    r = client.get(f"/v/{lineage.merged}")
    assert r.status_code == 200
    for vid in (lineage.merged, lineage.child, lineage.extra, lineage.base):
        assert f'data-id="{vid}"' in r.text  # every ancestor up to the roots is a node
    assert f'data-from="{lineage.child}" data-to="{lineage.merged}" data-order="1"' in r.text
    assert f'data-from="{lineage.extra}" data-to="{lineage.merged}" data-order="2"' in r.text
    assert client.get("/mounts").status_code == 200


def test_version_counts_and_pages(client: httpx.Client, lineage: Lineage) -> None:
    r = client.get(f"/v/{lineage.child}")
    assert 'id="count-added">1<' in r.text and 'id="count-modified">1<' in r.text
    assert 'id="count-removed">1<' in r.text
    r = client.get(f"/v/{lineage.child}", params={"kind": "removed"})
    assert "blob.bin" in r.text
    r = client.get(f"/v/{lineage.base}", params={"kind": "added", "start": 3})
    assert 'id="count-added">7<' in r.text
    assert r.text.count("<li>") == 4 and "tables/meta.json" in r.text and "blob.bin" not in r.text


def test_unknown_ids_and_paths_are_404(client: httpx.Client, lineage: Lineage) -> None:
    for url in ("/nothing", "/v/" + "0" * 32, "/v/notanid", f"/v/{lineage.base}/files/no/such/file",
                f"/v/{lineage.base}/files/notes.txt/below", f"/v/{lineage.base}?kind=bogus",
                f"/v/{lineage.base}?start=-1", "/diff?a=vision/nope&b=vision/cats",
                f"/v/{lineage.base}/raw/notes.txt", f"/v/{lineage.base}/raw/blob.bin"):
        r = client.get(url)
        assert r.status_code == 404, url
        assert "Not found" in r.text or r.status_code == 404


@pytest.mark.parametrize("path", ["..", "../../etc/passwd", "images/../../x", "%2e%2e/%2e%2e/etc/passwd",
                                  "images/%2e%2e/notes.txt", "./notes.txt", "images//cat.png",
                                  "%2Fetc%2Fpasswd", "images/%00"])
def test_traversal_never_leaves_the_tree(server: UiServer, lineage: Lineage, path: str) -> None:
    status, text = raw_get(server, f"/v/{lineage.base}/files/{path}")
    assert status == 404, (path, status)
    assert "root:" not in text
    assert "not a path inside the version" in text  # refused as a path, not merely not found


def raw_get(server: UiServer, path: str) -> tuple[int, str]:
    """The request line sent as written (httpx would normalise dots away before sending)."""
    host, port = server.url.removeprefix("http://").rsplit(":", 1)
    conn = http.client.HTTPConnection(host, int(port), timeout=30)
    try:
        conn.request("GET", path)
        r = conn.getresponse()
        return r.status, r.read().decode(errors="replace")
    finally:
        conn.close()


def test_absolute_paths_are_not_read_from_disk(server: UiServer, lineage: Lineage) -> None:
    for path in (f"/v/{lineage.base}/files//etc/passwd", f"/v/{lineage.base}/raw//etc/passwd",
                 f"/v/{lineage.base}/raw/../../../../etc/passwd", "/static/../../../../etc/passwd",
                 "/static/%2e%2e/%2e%2e/%2e%2e/etc/passwd"):
        status, text = raw_get(server, path)
        assert status == 404 and "root:" not in text, path


def test_previews(client: httpx.Client, lineage: Lineage) -> None:
    r = client.get(f"/v/{lineage.base}/files/tables/labels.csv")
    assert "<th>label</th>" in r.text and "<td>dog</td>" in r.text
    r = client.get(f"/v/{lineage.base}/files/tables/meta.json")
    assert "<th>split</th>" in r.text and "<td>val</td>" in r.text
    r = client.get(f"/v/{lineage.base}/files/images/cat.png")
    assert 'id="thumb"' in r.text
    img = client.get(f"/v/{lineage.base}/raw/images/cat.png")
    assert img.status_code == 200 and img.headers["content-type"] == "image/png"
    assert img.content.startswith(b"\x89PNG")
    # blob.bin is 16 KiB, over the server's 4 KiB preview limit: size and hash, no bytes
    data = bytes(range(256)) * 64
    r = client.get(f"/v/{lineage.base}/files/blob.bin")
    assert hashlib.sha256(data).hexdigest() in r.text and "No preview" in r.text
    assert "preview-too-big" in r.text


def test_binary_file_shows_size_and_hash(client: httpx.Client, lineage: Lineage) -> None:
    r = client.get(f"/v/{lineage.base}/files/images/dog.png")
    assert r.status_code == 200
    r = client.get(f"/v/{lineage.base}/files/images")
    assert "cat.png" in r.text and lineage.base[:12] in r.text


def test_diff(client: httpx.Client, lineage: Lineage) -> None:
    r = client.get("/diff", params={"a": lineage.base, "b": lineage.merged})
    assert r.status_code == 200
    assert 'id="count-added">4<' in r.text and "README.md" in r.text  # + bird.png, cat2.png, birds.csv
    r = client.get("/diff", params={"a": lineage.base, "b": lineage.merged, "kind": "removed"})
    assert "blob.bin" in r.text
    r = client.get("/diff", params={"a": lineage.base, "b": lineage.merged, "dir": "images"})
    assert "images/bird.png" in r.text and "README.md" not in r.text
    r = client.get("/diff", params={"a": lineage.base, "b": lineage.merged, "dir": "../x"})
    assert r.status_code == 404


def _start(store: str, tmp: Path, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "fsmount.cli", "ui", "--store", store, "--port", "0", *args],
                          capture_output=True, text=True, stdin=subprocess.DEVNULL, timeout=60,
                          env={**os.environ, "XDG_DATA_HOME": str(tmp / "data")})


def test_non_loopback_host_without_token_is_refused(lineage: Lineage, tmp_path: Path) -> None:
    p = _start(lineage.store, tmp_path, "--host", "0.0.0.0")
    assert p.returncode == 2
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and "--token" in lines[0] and "Traceback" not in p.stderr


def test_token(lineage: Lineage, tmp_path: Path) -> None:
    s = UiServer(lineage.store, tmp_path / "cache", "--token", TOKEN,
                 env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")})
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.get("/").status_code == 401
            assert c.get(f"/v/{lineage.base}").status_code == 401
            assert c.get("/", headers={"x-fsmount-token": TOKEN[:-1] + "X"}).status_code == 401
            assert c.get("/", params={"token": "wrong"}).status_code == 401
            assert c.get("/static/style.css").status_code == 401
            assert c.get("/", headers={"x-fsmount-token": TOKEN}).status_code == 200
            assert c.get("/", headers={"authorization": f"Bearer {TOKEN}"}).status_code == 200
            r = c.get("/", params={"token": TOKEN, "q": "birds"}, follow_redirects=False)
            assert r.status_code == 303 and r.headers["location"] == "/?q=birds"
            assert "fsmount_ui_token" in r.headers["set-cookie"] and "HttpOnly" in r.headers["set-cookie"]
            r = c.get("/", params={"q": "birds"})  # the cookie from the first visit
            assert r.status_code == 200 and "birds" in r.text
    finally:
        s.stop()


def test_token_file(lineage: Lineage, tmp_path: Path) -> None:
    (tmp_path / "token").write_text(TOKEN + "\n")
    s = UiServer(lineage.store, tmp_path / "cache", "--token-file", str(tmp_path / "token"),
                 env={**os.environ, "XDG_DATA_HOME": str(tmp_path / "data")})
    try:
        assert TOKEN not in " ".join(map(str, s.proc.args))
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert c.get("/").status_code == 401
            assert c.get("/", headers={"x-fsmount-token": TOKEN}).status_code == 200
    finally:
        s.stop()
    (tmp_path / "empty").write_text("")
    p = _start(lineage.store, tmp_path, "--token-file", str(tmp_path / "empty"))
    assert p.returncode == 2 and "at least 8 characters" in p.stderr


def test_foreign_host_header_is_refused_without_token(client: httpx.Client) -> None:
    assert client.get("/", headers={"host": "evil.example:80"}).status_code == 403
    assert client.get("/", headers={"host": "localhost"}).status_code == 200


def test_mounts_page_shows_a_live_mount_and_its_counters(
    lineage: Lineage, tmp_path: Path, require_fuse: None
) -> None:
    mnt = tmp_path / "mnt"
    mnt.mkdir()
    s = UiServer(lineage.store, tmp_path / "cache-ui")  # same runtime dir as the mount (isolated_env)
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            assert "No fsmount mounts" in c.get("/mounts").text
            with mounted(lineage.base, mnt, store=lineage.store, cache_dir=str(tmp_path / "cache-mnt")):
                assert (mnt / "notes.txt").read_text() == "first notes\n"
                r = c.get("/mounts")
                assert str(mnt) in r.text and "cats" in r.text
                assert re.search(r"12 B in [1-9][0-9]* reads", r.text)  # the daemon's own counters
                assert '<meta http-equiv="refresh"' in r.text
            assert not is_mounted(str(mnt))
            assert "No fsmount mounts" in c.get("/mounts").text
    finally:
        s.stop()


@pytest.mark.s3
def test_an_s3_store(s3_store_url: str, tmp_path: Path) -> None:
    lin = make_lineage(tmp_path, s3_store_url)
    s = UiServer(s3_store_url, tmp_path / "cache-ui")  # AWS_ENDPOINT_URL points at moto (fixture)
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            r = c.get(f"/v/{lin.merged}")
            assert r.status_code == 200 and f'data-id="{lin.base}"' in r.text and s3_store_url in r.text
            assert "<td>dog</td>" in c.get(f"/v/{lin.merged}/files/tables/labels.csv").text
            assert c.get(f"/v/{lin.merged}/raw/images/bird.png").content.startswith(b"\x89PNG")
    finally:
        s.stop()


def test_a_big_folder_is_paged(tmp_path: Path) -> None:
    src = tmp_path / "src" / "many"
    src.mkdir(parents=True)
    for i in range(1201):
        (src / f"f{i:04d}.txt").write_text(f"{i}\n")
    store = f"file://{tmp_path / 'store'}"
    ds = Dataset.create(dataset_name="many", dataset_project="p", store=store)
    ds.add_files(tmp_path / "src")
    ds.finalize()
    s = UiServer(store, tmp_path / "cache-ui")
    try:
        with httpx.Client(base_url=s.url, timeout=30) as c:
            def names(**q: object) -> list[str]:
                text = c.get(f"/v/{ds.id}/files/many", params=q).text
                return re.findall(r'class="file-link" href="[^"]+">([^<]+)<', text)

            first = names()
            assert len(first) == 500 and first[0] == "f0000.txt" and first[-1] == "f0499.txt"
            assert names(start=1000) == [f"f{i:04d}.txt" for i in range(1000, 1201)]
            assert names(after="f0700.txt")[:2] == ["f0701.txt", "f0702.txt"]
            assert names(after="f0700.zz")[0] == "f0701.txt"  # between two names: the next one
            assert names(start=5000) == []
            page = c.get(f"/v/{ds.id}/files/many", params={"start": 500}).text
            assert "1,201" in page and "start=1000" in page and "start=0" not in page.split("previous")[1]
    finally:
        s.stop()
