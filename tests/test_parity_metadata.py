"""Metadata attachments: set_metadata/get_metadata (dict, DataFrame, bytes), `fsmount metadata`, limits."""

from __future__ import annotations

import hashlib
import threading
from pathlib import Path

import pytest

from fsmount import Dataset
from fsmount.api import metadata as api_metadata
from fsmount.api.sync import gc
from fsmount.api.workspace import Workspace
from fsmount.commit import attachments
from fsmount.errors import IntegrityError, NotFoundError, UsageError
from tests.helpers import run_cli, run_json, write_tree


def _final(ws: Workspace, tmp: Path) -> Dataset:
    ds = Dataset.create("pets", "cv", workspace=ws)
    ds.add_files(write_tree(tmp / "src", {"a": "1"}))
    ds.finalize()
    return ds


def _store_keys(ws: Workspace) -> list[tuple[str, int]]:
    return sorted((i.key, i.size) for i in ws.store.list(""))


def test_set_and_get_metadata_of_every_kind(store_url: str, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    ws = Workspace(store_url)
    ds = _final(ws, tmp_path)
    ds.set_metadata({"classes": ["cat", "dog"], "n": 2})
    frame = pd.DataFrame({"label": ["cat", "dog"], "count": [3, 4]})
    ds.set_metadata(frame, metadata_name="counts")
    ds.set_metadata(b"\x00\x01raw", metadata_name="raw", ui_visible=False)
    assert ds.get_metadata() == {"classes": ["cat", "dog"], "n": 2}
    assert ds.get_metadata("counts").equals(frame)
    assert ds.get_metadata("raw") == b"\x00\x01raw"
    listed = {m["name"]: m for m in Dataset.get(ref=ds.id, workspace=ws).list_metadata()}
    assert listed["raw"] == {"name": "raw", "kind": "bytes", "size": 5,
                             "hash": hashlib.sha256(b"\x00\x01raw").hexdigest(), "ui_visible": False}
    assert listed["counts"]["kind"] == "csv" and listed["metadata"]["kind"] == "json"
    info = run_json("info", "--store", store_url, ds.id)
    assert {m["name"] for m in info["metadata"]} == set(listed)
    assert "metadata:" in run_cli("info", "--store", store_url, ds.id).stdout
    # content-addressed: the same dict on another version is one blob
    other = Dataset.create("other", "cv", workspace=ws)
    other.set_metadata({"n": 2, "classes": ["cat", "dog"]})
    assert other.list_metadata()[0]["hash"] == listed["metadata"]["hash"]
    assert len(list(ws.store.list("attachments/"))) == len({m["hash"] for m in listed.values()})
    # replacing one name keeps the others; a deleted version takes its index with it
    ds.set_metadata({"n": 3})
    assert ds.get_metadata() == {"n": 3} and len(ds.list_metadata()) == len(listed)
    ds.delete()
    assert ws.store.head(attachments.index_key(ds.id)) is None


def test_a_dataframe_as_parquet(file_store_url: str, tmp_path: Path) -> None:
    pd = pytest.importorskip("pandas")
    pytest.importorskip("pyarrow")
    ds = _final(Workspace(file_store_url), tmp_path)
    frame = pd.DataFrame({"label": ["cat", "dog"], "score": [0.5, 0.25]})
    ds.set_metadata(frame, metadata_name="scores", fmt="parquet")
    assert ds.list_metadata()[0]["kind"] == "parquet"
    assert ds.get_metadata("scores").equals(frame)


def test_metadata_cli(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    ds = _final(ws, tmp_path)
    (tmp_path / "stats.json").write_text('{"mean": 0.5}')
    (tmp_path / "blob.dat").write_bytes(b"\xffbinary")
    stats = str(tmp_path / "stats.json")
    out = run_json("metadata", "--store", store_url, "cv/pets", "--set", "stats", stats)
    assert out["kind"] == "json" and out["size"] == 13
    run_cli("metadata", "--store", store_url, "cv/pets", "--set", "blob", str(tmp_path / "blob.dat"))
    assert ds.get_metadata("stats") == {"mean": 0.5}
    got = run_cli("metadata", "--store", store_url, "cv/pets", "--get", "stats").stdout
    assert got == '{"mean": 0.5}'
    run_cli("metadata", "--store", store_url, "cv/pets", "--get", "blob", "-o", str(tmp_path / "out"))
    assert (tmp_path / "out").read_bytes() == b"\xffbinary"
    rows = run_json("metadata", "--store", store_url, ds.id)["metadata"]
    assert [(r["name"], r["kind"]) for r in rows] == [("blob", "bytes"), ("stats", "json")]
    run_cli("metadata", "--store", store_url, ds.id, "--remove", "blob")
    assert [m["name"] for m in ds.list_metadata()] == ["stats"]


def test_bad_metadata_is_refused_and_changes_nothing(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    ds = _final(ws, tmp_path)
    ds.set_metadata({"ok": True})
    before = _store_keys(ws)
    big = tmp_path / "big.bin"
    with open(big, "wb") as f:
        f.truncate(attachments.MAX_ATTACHMENT_BYTES + 1)
    (tmp_path / "bad.json").write_text("{not json")
    for args in (("--set", "big", str(big)), ("--set", "j", str(tmp_path / "bad.json")),
                 ("--set", " padded", str(tmp_path / "bad.json"), "--kind", "bytes"),
                 ("--get", "nope"), ("--remove", "nope"), ("--set", "x", str(tmp_path / "missing"))):
        proc = run_cli("metadata", "--store", store_url, ds.id, *args, check=False)
        assert proc.returncode != 0 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
        assert "Traceback" not in proc.stderr
    proc = run_cli("metadata", "--store", store_url, "cv/nope", check=False)
    assert proc.returncode == 1
    with pytest.raises(UsageError, match="64 MiB"):
        ds.set_metadata(bytes(attachments.MAX_ATTACHMENT_BYTES + 1), metadata_name="big")
    with pytest.raises(UsageError, match="JSON-serialisable"):
        ds.set_metadata({"x": object()})
    with pytest.raises(NotFoundError):
        ds.get_metadata("nope")
    assert _store_keys(ws) == before
    assert ds.get_metadata() == {"ok": True}


def test_a_damaged_attachment_is_an_error_not_other_bytes(file_store_url: str, tmp_path: Path) -> None:
    ws = Workspace(file_store_url)
    ds = _final(ws, tmp_path)
    ds.set_metadata(b"the real bytes", metadata_name="raw")
    (m,) = ds.list_metadata()
    blob = Path(file_store_url.removeprefix("file://")) / attachments.blob_key(bytes.fromhex(m["hash"]))
    blob.write_bytes(b"the fake bytes")
    with pytest.raises(IntegrityError, match="damaged"):
        ds.get_metadata("raw")
    ds.set_metadata(b"the real bytes", metadata_name="raw")  # writing it again repairs the blob
    assert ds.get_metadata("raw") == b"the real bytes"


def test_two_writers_attaching_at_once_both_land(store_url: str, tmp_path: Path) -> None:
    ws = Workspace(store_url)
    ds = _final(ws, tmp_path)
    start = threading.Barrier(2)

    def writer(prefix: str) -> None:
        store = Workspace(store_url).store
        start.wait()
        for i in range(8):
            api_metadata.set_metadata(store, ds.id, {"i": i}, f"{prefix}{i}")

    threads = [threading.Thread(target=writer, args=(p,)) for p in ("a", "b")]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert {m["name"] for m in ds.list_metadata()} == {f"{p}{i}" for p in "ab" for i in range(8)}


def test_gc_frees_metadata_no_version_names(store_url: str, tmp_path: Path) -> None:
    """A replaced attachment's blob, a deleted version's blobs and its index go at gc; every blob a
    version still names stays readable. Keys gc does not recognise are left alone."""
    ws = Workspace(store_url)
    ds = _final(ws, tmp_path)
    ds.set_metadata({"v": 1})  # replaced below: its blob becomes unused
    ds.set_metadata({"v": 2})
    ds.set_metadata(b"shared", metadata_name="raw")
    gone = Dataset.create("gone", "cv", workspace=ws)
    gone.set_metadata(b"only on the deleted version", metadata_name="mine")
    gone.set_metadata(b"shared", metadata_name="raw")
    ws.store.put_conditional(attachments.INDEX_PREFIX + "not-a-version", b"x", if_match=None)
    ws.store.put_conditional(attachments.BLOB_PREFIX + "zz/stray", b"x", if_match=None)
    Dataset.get(ref=gone.id, only_final=False, workspace=ws).delete(force=True)

    def blobs() -> set[str]:
        return {i.key for i in ws.store.list(attachments.BLOB_PREFIX)}

    before = blobs()
    assert gc(ws, grace=3600)["deleted"] == 0  # young: kept for the grace period
    res = gc(ws, grace=0)
    left = blobs()
    want = {attachments.blob_key(hashlib.sha256(b).digest()) for b in (b"shared",)}
    assert want <= left and attachments.BLOB_PREFIX + "zz/stray" in left
    assert len(before - left) == 2 and res["deleted"] >= 2  # {"v": 1} and the deleted version's own
    keys = {i.key for i in ws.store.list(attachments.INDEX_PREFIX)}
    assert keys == {attachments.index_key(ds.id), attachments.INDEX_PREFIX + "not-a-version"}
    again = Dataset.get(ref=ds.id, workspace=ws)
    assert again.get_metadata() == {"v": 2} and again.get_metadata("raw") == b"shared"
