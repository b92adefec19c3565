"""Metadata attachments on the version page: each stored kind drawn; the page with issue 13's API."""

from __future__ import annotations

import io
import os
from pathlib import Path

import httpx
import pandas as pd
import pytest

from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.ui import metadata

from .ui_helpers import UiServer, make_lineage


def test_each_kind_is_drawn() -> None:
    j = metadata.shown("params", "json", b'{"lr": 0.1, "layers": [1, 2]}')
    assert j.kind == "json" and '"lr": 0.1' in j.text
    df = pd.DataFrame({"split": ["train", "val"], "n": [900, 100]})
    c = metadata.shown("counts", "csv", df.to_csv(index=False).encode())
    assert c.kind == "table" and c.columns == ["split", "n"] and c.rows == [["train", "900"], ["val", "100"]]
    buf = io.BytesIO()
    df.to_parquet(buf)
    p = metadata.shown("counts", "parquet", buf.getvalue())
    assert p.kind == "table" and p.columns[:2] == ["split", "n"] and p.rows[0][:2] == ["train", "900"]
    b = metadata.shown("blob", "bytes", b"\0" * 10, "ab" * 32)
    assert b.kind == "bytes" and b.size == 10 and b.sha256 == "ab" * 32
    bad = metadata.shown("bad", "json", b"{nope")
    assert bad.kind == "bytes" and "not valid JSON" in bad.note


def test_no_metadata_api_shows_nothing(tmp_path: Path) -> None:
    assert metadata.attachments(Workspace(f"file://{tmp_path}").store, "0" * 32, api=None) == []


@pytest.mark.skipif(metadata.API is None or not hasattr(Dataset, "set_metadata"),
                    reason="this fsmount has no metadata attachments (issue 13) yet")
def test_version_page_shows_attachments(tmp_path: Path) -> None:
    lin = make_lineage(tmp_path)
    ds = Dataset.get(ref=lin.merged, store=lin.store)
    ds.set_metadata({"lr": 0.25}, metadata_name="params")
    ds.set_metadata(pd.DataFrame({"label": ["cat", "bird"], "count": [2, 1]}), metadata_name="labels")
    ds.set_metadata({"hidden": True}, metadata_name="internal", ui_visible=False)
    s = UiServer(lin.store, tmp_path / "cache-ui", env={**os.environ})
    try:
        r = httpx.get(f"{s.url}/v/{lin.merged}", timeout=30)
    finally:
        s.stop()
    assert "<h3>params</h3>" in r.text and "0.25" in r.text
    assert "<h3>labels</h3>" in r.text and "<th>label</th>" in r.text and "<td>bird</td>" in r.text
    assert "internal" not in r.text
