"""For the UI tests: a store with a three-generation, two-parent lineage; `fsmount ui` run for real."""

from __future__ import annotations

import os
import struct
import subprocess
import sys
import zlib
from dataclasses import dataclass
from pathlib import Path

from fsmount.api.dataset import Dataset
from fsmount.api.workspace import Workspace
from fsmount.commit.finalize import TreeUploader, merged_base

from .helpers import write_tree


def png(width: int, height: int, rgb: tuple[int, int, int]) -> bytes:
    """A valid PNG of one colour (stdlib only)."""
    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
    row = b"\0" + bytes(rgb) * width
    return (b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0))
            + chunk(b"IDAT", zlib.compress(row * height)) + chunk(b"IEND", b""))


@dataclass
class Lineage:
    """gen 1: `base` and `extra` (two roots); gen 2: `child` of base; gen 3: `merged` of [child, extra]."""

    store: str
    base: str
    extra: str
    child: str
    merged: str


def _version(ws: Workspace, folder: Path, name: str, version: str, files: dict[str, bytes | str],
             parents: list[str] | None = None, remove: list[str] | None = None, tags: list[str] | None = None,
             description: str = "") -> str:
    ds = Dataset.create(dataset_name=name, dataset_project="vision", dataset_version=version,
                        parent_datasets=parents, dataset_tags=tags, description=description, workspace=ws)
    if files:
        ds.add_files(write_tree(folder, files))
    for p in remove or []:
        ds.remove_files(p)
    ds.finalize(message=f"{name} {version}")
    return ds.id


def make_lineage(tmp: Path, store: str | None = None) -> Lineage:
    store = store or f"file://{tmp / 'store'}"
    ws = Workspace(store, cache_dir=tmp / "cache-build")
    try:
        base = _version(ws, tmp / "src-base", "cats", "1.0", {
            "images/cat.png": png(64, 48, (220, 120, 30)),
            "images/dog.png": png(32, 32, (40, 90, 200)),
            "tables/labels.csv": "file,label\ncat.png,cat\ndog.png,dog\n",
            "tables/meta.json": '[{"id": 1, "split": "train"}, {"id": 2, "split": "val"}]',
            "notes.txt": "first notes\n",
            "blob.bin": bytes(range(256)) * 64,
            "deep/a/b/c.txt": "deep\n",
        }, tags=["images", "baseline"], description="Cats and dogs, the first cut")
        extra = _version(ws, tmp / "src-extra", "birds", "1.0", {
            "images/bird.png": png(40, 40, (30, 160, 60)),
            "tables/birds.csv": "file,label\nbird.png,bird\n",
        }, tags=["birds"])
        child = _version(ws, tmp / "src-child", "cats", "1.1", {
            "notes.txt": "second notes\n", "images/cat2.png": png(16, 16, (200, 0, 0))},
            parents=[base], remove=["blob.bin"])
        # finalize reads the merged parents' tree before it has stored it (commit/finalize.py keeps
        # merged_base's trees pending; reported): store them first, as finalize would, write-once.
        trees = TreeUploader(ws.store, ws.reader)
        merged_base(ws.reader, [child, extra], trees)
        trees.flush()
        merged = _version(ws, tmp / "src-merged", "cats-and-birds", "2.0", {"README.md": "# merged\n"},
                          parents=[child, extra], tags=["merged"])
    finally:
        ws.close()
    return Lineage(store, base, extra, child, merged)


class UiServer:
    """`fsmount ui --port 0` in a subprocess; `url` from its first line; stopped by `stop()`."""

    def __init__(self, store: str, cache: Path, *extra: str, env: dict[str, str] | None = None) -> None:
        argv = [sys.executable, "-m", "fsmount.cli", "ui", "--store", store, "--cache-dir", str(cache),
                "--port", "0", *extra]
        self.proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                     stdin=subprocess.DEVNULL, env=env or os.environ.copy())
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()  # blocks until the server is listening (or has died)
        if " on http" not in line:
            self.proc.wait(10)
            raise AssertionError(f"fsmount ui did not start: {line!r} {self.proc.stderr.read()!r}")
        self.url = line.rsplit(" on ", 1)[1].strip().split("?", 1)[0].rstrip("/")

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(15)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        for f in (self.proc.stdout, self.proc.stderr):
            if f is not None:
                f.close()
