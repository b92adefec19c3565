"""Prometheus exposition of real mounts' counters: gauges are gauges (no `_total`), each one produced."""

from __future__ import annotations

from pathlib import Path

from fsmount import Dataset
from fsmount.api.workspace import Workspace
from fsmount.fs.core import ReadOnlyFS
from fsmount.fs.options import FsOptions
from fsmount.fs.writable import WritableFS
from fsmount.overlay.upper import UpperLayer
from fsmount.service.metrics import GAUGES, _flatten, render
from tests.helpers import write_tree


def _counters(tmp_path: Path, store_url: str) -> tuple[dict[str, object], dict[str, object]]:
    """counters() of a read-only and of a writable filesystem core over one real version."""
    ws = Workspace(store_url, cache_dir=tmp_path / "cache")
    ds = Dataset.create("m", "p", workspace=ws)
    ds.add_files(write_tree(tmp_path / "src", {"a.txt": b"hello"}))
    ds.finalize()
    ro = ReadOnlyFS(ws.reader, ws.reader.record(ds.id), FsOptions())
    upper = UpperLayer(tmp_path / "ov")
    upper.bind(ds.id, ds.record.root)
    try:
        return ro.counters(), WritableFS(ws, ds.record, upper).counters()
    finally:
        upper.close()
        ws.close()


def _types(text: str) -> dict[str, str]:
    return {ln.split()[2]: ln.split()[3] for ln in text.splitlines() if ln.startswith("# TYPE")}


def test_every_gauge_is_produced_and_exported_as_a_gauge(tmp_path: Path, file_store_url: str) -> None:
    ro, rw = _counters(tmp_path, file_store_url)
    produced = set(_flatten(ro)) | set(_flatten(rw))
    assert produced >= GAUGES, f"gauges nothing produces: {sorted(GAUGES - produced)}"
    for counters in (ro, rw):
        types = _types(render([{"mountpoint": "/m", "version": "v", "counters": counters}]))
        for metric, kind in types.items():
            assert metric.endswith("_total") == (kind == "counter"), (metric, kind)
        gauges = {m.removeprefix("fsmount_") for m, k in types.items() if k == "gauge"}
        assert gauges == GAUGES & set(_flatten(counters))
    # What goes up and down (or is a high-water mark) is never exported as a counter.
    for name in ("open_files", "held_bytes", "largest_read", "prefetch_inflight_bytes", "pending", "inodes"):
        assert name in GAUGES
