"""External files (add --links): in a local folder and an S3 bucket (moto), through get, get --copy, a real
mount and fsspec; a source changed after adding is EIO and an error naming the URL, never other bytes."""

from __future__ import annotations

import errno
import os
import uuid
from collections.abc import Callable
from pathlib import Path

import boto3
import fsspec
import pytest

from fsmount.api.dataset import Dataset
from fsmount.errors import FormatError
from fsmount.format.objects import LinkEntry, decode_tree, encode_tree
from tests.conftest import MotoServer, fuse_available
from tests.fs_helpers import cli_mount
from tests.helpers import hash_tree, run_cli, run_json, write_tree

BLOCK = 64 * 1024
FILES: dict[str, bytes | str] = {
    "a.txt": "hello\n", "sub/big.bin": os.urandom(3 * BLOCK + 123), "sub/c.csv": "x,y\n1,2\n"}


@pytest.fixture
def env_store(file_store_url: str, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> str:
    monkeypatch.setenv("FSMOUNT_STORE", file_store_url)
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", f"file://{tmp_path / 'src'}")  # tests run as root
    return file_store_url


@pytest.fixture(params=["file", "s3"])
def source(request: pytest.FixtureRequest, tmp_path: Path) -> tuple[str, Callable[[str, bytes], None]]:
    """(URL of a folder or prefix holding FILES, a function that rewrites one of them)."""
    if request.param == "file":
        root = write_tree(tmp_path / "src", FILES)

        def change_file(rel: str, data: bytes) -> None:
            (root / rel).write_bytes(data)

        return f"file://{root}", change_file
    moto = request.getfixturevalue("moto_server")
    monkeypatch = request.getfixturevalue("monkeypatch")
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto.url)
    s3 = boto3.client("s3", endpoint_url=moto.url)
    bucket = f"links-{uuid.uuid4().hex[:12]}"
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", f"{os.environ.get('FSMOUNT_LINK_ALLOW', '')} s3://{bucket}/raw/")
    s3.create_bucket(Bucket=bucket)
    for rel, content in FILES.items():
        body = content.encode() if isinstance(content, str) else content
        s3.put_object(Bucket=bucket, Key=f"raw/{rel}", Body=body)

    def change_s3(rel: str, data: bytes) -> None:
        s3.put_object(Bucket=bucket, Key=f"raw/{rel}", Body=data)

    return f"s3://{bucket}/raw", change_s3


def _expected() -> dict[str, str]:
    return hash_tree(write_tree(Path(os.environ["XDG_DATA_HOME"]) / "expected", FILES))


def _version(url: str, *extra: str) -> str:
    vid = run_json("create", "--project", "cv", "--name", "ext", "--block-size", "64KiB")["id"]
    assert run_json("add", "--links", url, *extra)["staged"] == len(FILES)
    run_cli("close")
    return vid


@pytest.mark.parametrize("hashed", [False, True], ids=["tag", "hash"])
def test_links_read_everywhere_and_refuse_a_changed_source(
    env_store: str, source: tuple[str, Callable[[str, bytes], None]], tmp_path: Path, hashed: bool
) -> None:
    url, change = source
    vid = _version(url, *(["--hash"] if hashed else []))
    want = _expected()
    entry = dict(Dataset.get(dataset_id=vid).iter_entries())["sub/big.bin"]
    assert (entry.url, entry.size) == (f"{url}/sub/big.bin", 3 * BLOCK + 123)  # type: ignore[union-attr]
    assert len(entry.sha256) == (32 if hashed else 0)  # type: ignore[union-attr]

    assert hash_tree(Path(run_cli("get", vid, "--cache-dir", str(tmp_path / "c1")).stdout.strip())) == want
    assert hash_tree(Path(run_cli("get", vid, "--copy", str(tmp_path / "copy"), "--cache-dir",
                                  str(tmp_path / "c1")).stdout.strip().splitlines()[-1])) == want
    big = FILES["sub/big.bin"]
    assert isinstance(big, bytes)
    fs = fsspec.filesystem("fsmount", cache_dir=str(tmp_path / "c2"), skip_instance_cache=True)
    assert fs.cat_file("cv/ext/sub/big.bin", BLOCK - 5, 2 * BLOCK + 7) == big[BLOCK - 5:2 * BLOCK + 7]
    if fuse_available():
        with cli_mount(vid, tmp_path / "mnt", env_store, tmp_path / "c3") as mnt:
            assert hash_tree(mnt) == want

    change("sub/big.bin", os.urandom(len(big)))  # same size, other bytes: a new ETag / mtime
    proc = run_cli("get", vid, "--cache-dir", str(tmp_path / "c4"), check=False)
    assert proc.returncode == 1 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    assert f"{url}/sub/big.bin changed since it was added" in proc.stderr
    with pytest.raises(OSError, match="changed since it was added"):
        fsspec.filesystem("fsmount", cache_dir=str(tmp_path / "c5"), skip_instance_cache=True).cat_file(
            "cv/ext/sub/big.bin")
    if fuse_available():
        with cli_mount(vid, tmp_path / "mnt", env_store, tmp_path / "c6") as mnt:
            assert (mnt / "a.txt").read_text() == "hello\n"  # the unchanged links still read
            with pytest.raises(OSError) as e:
                (mnt / "sub/big.bin").read_bytes()
            assert e.value.errno == errno.EIO
        # What was cached while the source was unchanged is still the bytes that were added.
        with cli_mount(vid, tmp_path / "mnt", env_store, tmp_path / "c3") as mnt:
            assert (mnt / "sub/big.bin").read_bytes() == big


def test_same_tag_other_bytes_caught_only_by_hash(env_store: str, tmp_path: Path) -> None:
    """A local file rewritten with its size and mtime kept has the same tag: --hash still refuses it."""
    root = write_tree(tmp_path / "src", FILES)
    _version(f"file://{root}", "--hash")
    big = root / "sub/big.bin"
    st = big.stat()
    big.write_bytes(os.urandom(st.st_size))
    os.utime(big, ns=(st.st_atime_ns, st.st_mtime_ns))
    proc = run_cli("get", "cv/ext", "--cache-dir", str(tmp_path / "c"), check=False)
    assert proc.returncode == 1 and "do not match the SHA-256 recorded by --hash" in proc.stderr, proc.stderr


def test_sync_keeps_links_it_did_not_touch(env_store: str, tmp_path: Path) -> None:
    root = write_tree(tmp_path / "src", FILES)
    folder = write_tree(tmp_path / "local", {"local.txt": "mine"})
    run_json("create", "--project", "cv", "--name", "mixed", "--block-size", "64KiB")
    run_cli("add", str(folder / "local.txt"))
    run_cli("add", "--links", f"file://{root}/sub", "--dataset-folder", "ext")
    run_cli("close")
    (folder / "local.txt").write_text("changed")
    (folder / "more.txt").write_text("new")
    run_cli("sync", "--folder", str(folder), "--project", "cv", "--name", "mixed")
    ds = Dataset.get(ref="cv/mixed")
    assert ds.version == "1.0.1"
    assert sorted(ds.list_files()) == ["ext/big.bin", "ext/c.csv", "local.txt", "more.txt"]
    copy = Path(run_cli("get", "cv/mixed").stdout.strip())
    assert (copy / "ext/c.csv").read_text() == "x,y\n1,2\n" and (copy / "local.txt").read_text() == "changed"


def test_unreadable_link_stages_nothing(env_store: str, tmp_path: Path, moto_server: MotoServer,
                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL", moto_server.url)
    root = write_tree(tmp_path / "src", FILES)
    vid = run_json("create", "--project", "cv", "--name", "bad")["id"]
    closed_port = "http://127.0.0.1:9/x.bin"  # discard port: nothing listens
    for bad in (f"file://{root}/missing.bin", closed_port, "s3://no-such-bucket-fsmount/x", "nourl"):
        proc = run_cli("add", "--links", f"file://{root}/a.txt", "--links", bad, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, (bad, proc.stderr)
        assert "Traceback" not in proc.stderr
    assert run_json("info", vid)["staged_files"] == 0


def test_file_links_refused_as_root_without_an_allow_list(env_store: str, tmp_path: Path,
                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    root = write_tree(tmp_path / "src", FILES)
    vid = _version(f"file://{root}")
    monkeypatch.setenv("FSMOUNT_LINK_ALLOW", f"file://{tmp_path / 'elsewhere'}")
    proc = run_cli("get", vid, check=False)
    assert proc.returncode == 3 and "not under FSMOUNT_LINK_ALLOW" in proc.stderr, proc.stderr
    monkeypatch.delenv("FSMOUNT_LINK_ALLOW")
    proc = run_cli("get", vid, check=False)
    assert proc.returncode == 3 and "not read as root" in proc.stderr, proc.stderr
    if fuse_available():
        with cli_mount(vid, tmp_path / "mnt", env_store, tmp_path / "c") as mnt:
            with pytest.raises(OSError) as e:
                (mnt / "a.txt").read_bytes()
            assert e.value.errno == errno.EACCES


def test_link_entry_round_trips_and_is_validated() -> None:
    e = LinkEntry("x.bin", 0o644, 1, 10, "s3://b/x.bin", '"etag"', b"", 4, (), "0" * 32)
    assert decode_tree(encode_tree([e])).entries == [e]
    bad = LinkEntry("x.bin", 0o644, 1, 10, "s3://b/x.bin", '"etag"', bytes(32), 4, (bytes(32),), "0" * 32)
    with pytest.raises(FormatError, match="do not add up"):
        decode_tree(encode_tree([bad]))  # 10 bytes in 4-byte chunks need 3 hashes


def test_warm_fetches_external_files_into_the_cache(
    env_store: str, source: tuple[str, Callable[[str, bytes], None]], tmp_path: Path
) -> None:
    """`fsmount warm` fetches links' chunks too: the source may then change, reads keep the added bytes."""
    url, change = source
    vid = _version(url)
    cache = str(tmp_path / "warm-cache")
    res = run_json("warm", vid, "--cache-dir", cache, "-q")
    assert res["fetched"] >= 6, res  # big.bin's 4 chunks, a.txt, c.csv
    big = FILES["sub/big.bin"]
    assert isinstance(big, bytes)
    change("sub/big.bin", os.urandom(len(big)))
    got = Path(run_cli("get", vid, "--cache-dir", cache).stdout.strip())
    assert hash_tree(got) == _expected()  # served from what warm cached, never the changed bytes
    again = run_json("warm", vid, "--cache-dir", cache, "-q")
    assert again["fetched"] == 0 and again["already_cached"] == res["objects"]
