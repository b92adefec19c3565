"""Audit of issue 9 on gs:// (fake-gcs-server) and azure:// (Azurite): damaged packs, and the UI's secrets.

A byte flipped in a pack object on the emulator: `get --copy`, `get --part` and fsspec refuse the damaged
file (non-zero exit, EIO) and still serve its neighbours; `fsmount check --read-data` finds it. The web
UI run against Azure with a connection string (an account key) shows the key on no page and in no
log line.
"""

from __future__ import annotations

import errno
import os
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from fsmount.api.dataset import Dataset
from fsmount.api.fsspec_fs import FsmountFileSystem
from fsmount.format.hashing import object_key
from fsmount.format.objects import FileEntry
from fsmount.store import open_store
from tests.emulators import AZ_KEY
from tests.helpers import run_cli, run_json, write_tree
from tests.ui_helpers import UiServer

FILES = {f"d/f{i:02}.txt": f"row {i}\n".encode() * (150 + 11 * i) for i in range(12)}
VICTIM, NEIGHBOUR = "d/f05.txt", "d/f06.txt"


@pytest.fixture(params=["gcs", "azure"])
def cloud(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    url: str = request.getfixturevalue("gcs_store_url" if request.param == "gcs" else "azure_store_url")
    monkeypatch.setenv("FSMOUNT_STORE", url)
    monkeypatch.delenv("FSMOUNT_PACK_THRESHOLD", raising=False)
    return url


def _overwrite(store: Any, key: str, data: bytes) -> None:
    """Bytes changed at rest, behind fsmount's back (the SDK's own upload, no fsmount metadata)."""
    if hasattr(store, "client"):  # azure
        store.client.upload_blob(store.prefix + key, data, overwrite=True)
    else:
        store._bucket().blob(store._name(key)).upload_from_string(data)


def test_a_damaged_pack_on_gcs_or_azure_is_never_served(cloud: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", dict(FILES))
    vid = run_json("sync", "--folder", str(src), "--project", "p", "--name", "c", "-q")["id"]
    e = dict(Dataset.get(dataset_id=vid).iter_entries())[VICTIM]
    assert isinstance(e, FileEntry) and not isinstance(e.blocks[0], bytes)
    h, off, _ = e.blocks[0]
    store = open_store(cloud)
    try:
        data = bytearray(store.get(object_key(h)))
        data[off + 2] ^= 0x20
        _overwrite(store, object_key(h), bytes(data))
    finally:
        store.close()
    for argv in (["--copy", str(tmp_path / uuid.uuid4().hex)],
                 ["--part", "0", "--num-parts", "1", "--copy", str(tmp_path / uuid.uuid4().hex)]):
        r = run_cli("get", vid, *argv, "-q", check=False)
        assert r.returncode not in (0, 70) and "Traceback" not in r.stderr, r.stderr
    fs = FsmountFileSystem(store=cloud, cache_dir=str(tmp_path / "fscache"), skip_instance_cache=True)
    try:
        with pytest.raises(OSError) as exc:
            fs.cat_file(f"{vid}/{VICTIM}")
        assert exc.value.errno == errno.EIO
        assert fs.cat_file(f"{vid}/{NEIGHBOUR}") == FILES[NEIGHBOUR]
    finally:
        fs.workspace.close()
    r = run_cli("check", "--read-data", check=False)
    assert r.returncode != 0 and h.hex() in r.stdout + r.stderr, r.stdout + r.stderr


def test_the_ui_on_azure_never_shows_the_account_key(azure_store_url: str, tmp_path: Path) -> None:
    src = write_tree(tmp_path / "src", {"a.txt": b"alpha\n", "b.csv": b"x,y\n1,2\n"})
    vid = run_json("--store", azure_store_url, "sync", "--folder", str(src), "--project", "p", "--name", "z",
                   "-q")["id"]
    conn = os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    ui = UiServer(azure_store_url, tmp_path / "uicache")
    try:
        with httpx.Client(base_url=ui.url, timeout=30) as c:
            for page in ("/", f"/v/{vid}", f"/v/{vid}/files", f"/v/{vid}/files/b.csv", "/mounts",
                         "/v/ffffffffffffffffffffffffffffffff", f"/diff?a={vid}&b=p/nosuch"):
                text = c.get(page).text
                assert AZ_KEY not in text and conn not in text and "AccountKey" not in text, page
        ui.proc.terminate()
        assert ui.proc.stderr is not None
        log = ui.proc.stderr.read()
        assert AZ_KEY not in log and "AccountKey=" not in log, log
    finally:
        ui.stop()
