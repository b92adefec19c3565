"""Packed versions built with the format layer alone: pack objects, ranged locators, trees, a record, a state.

Independent of the commit code that packs files (issue 10's writer): the read path is tested
against exactly what docs/FORMAT.md §4 allows, whatever writes it.
"""

from __future__ import annotations

import hashlib
import random
import time
import uuid
from dataclasses import dataclass, field

from fsmount.format.hashing import object_key, record_key, state_key
from fsmount.format.objects import EMPTY_TREE_BYTES, EMPTY_TREE_HASH, DirEntry, Entry, FileEntry, encode_tree
from fsmount.format.records import VersionRecord, VersionState
from fsmount.store import open_store
from fsmount.store.base import ObjectStore

MiB = 2**20


@dataclass
class PackedVersion:
    id: str
    files: dict[str, bytes]
    packs: list[bytes] = field(default_factory=list)  # pack hashes, in tree order
    pack_of: dict[str, bytes] = field(default_factory=dict)  # path -> its pack's hash
    locator: dict[str, tuple[bytes, int, int]] = field(default_factory=dict)  # path -> [hash, offset, length]

    def in_pack(self, h: bytes) -> list[str]:
        return [p for p, ph in self.pack_of.items() if ph == h]


def small_files(n: int, dirs: int, lo: int = 8 * 1024, hi: int = 96 * 1024,
                seed: int = 1) -> dict[str, bytes]:
    """`n` files of lo..hi random bytes in `dirs` class folders (the ImageFolder layout)."""
    rnd = random.Random(seed)
    out = {}
    for i in range(n):
        out[f"class{i % dirs:03d}/img{i:06d}.bin"] = rnd.randbytes(rnd.randint(lo, hi))
    return out


def make_packed_version(store_url: str, files: dict[str, bytes], pack_size: int = 32 * MiB,
                        small: int = MiB, name: str = "packed") -> PackedVersion:
    """Write a final version of `files`: those under `small` bytes packed in tree order into packs of
    about `pack_size` bytes (entries with ranged locators), larger ones in 4 MiB bare blocks."""
    store = open_store(store_url)
    vid = uuid.uuid4().hex
    out = PackedVersion(vid, dict(files))
    now = time.time()
    mtime = int(now * 1e9)
    bs = 4 * MiB
    entries: dict[str, FileEntry] = {}
    pending: list[tuple[str, bytes]] = []

    def flush() -> None:
        if not pending:
            return
        blob = b"".join(d for _, d in pending)
        h = hashlib.sha256(blob).digest()
        store.put(object_key(h), blob)
        out.packs.append(h)
        off = 0
        for path, data in pending:
            loc = (h, off, len(data))
            entries[path] = FileEntry(path.rsplit("/", 1)[-1], 0o644, mtime, len(data),
                                      hashlib.sha256(data).digest(), bs, (loc,), vid)
            out.pack_of[path] = h
            out.locator[path] = loc
            off += len(data)
        pending.clear()

    size = 0
    for path in sorted(files, key=lambda p: p.split("/")):
        data = files[path]
        if 0 < len(data) < small:
            if size + len(data) > pack_size:
                flush()
                size = 0
            pending.append((path, data))
            size += len(data)
            continue
        blocks = []
        for i in range(0, len(data), bs):
            chunk = data[i:i + bs]
            h = hashlib.sha256(chunk).digest()
            store.put(object_key(h), chunk)
            blocks.append(h)
        entries[path] = FileEntry(path.rsplit("/", 1)[-1], 0o644, mtime, len(data),
                                  hashlib.sha256(data).digest(), bs, tuple(blocks), vid)
    flush()

    def write_dir(prefix: str) -> tuple[bytes, int, int]:
        kids: list[Entry] = []
        nfiles = nbytes = 0
        subdirs = sorted({p[len(prefix):].split("/", 1)[0] for p in entries
                          if p.startswith(prefix) and "/" in p[len(prefix):]})
        for d in subdirs:
            th, nf, nb = write_dir(f"{prefix}{d}/")
            kids.append(DirEntry(d, 0o755, mtime, th, nf, nb))
            nfiles += nf
            nbytes += nb
        for p, e in entries.items():
            if p.startswith(prefix) and "/" not in p[len(prefix):]:
                kids.append(e)
                nfiles += 1
                nbytes += e.size
        data = encode_tree(kids)
        th = hashlib.sha256(data).digest()
        store.put(object_key(th), data)
        return th, nfiles, nbytes

    root, nfiles, nbytes = write_dir("")
    publish_final(store, vid, name, root, nfiles, nbytes, bs, author="test", message="packed")
    store.close()
    return out


def publish_final(store: ObjectStore, vid: str, name: str, root: bytes, files: int, nbytes: int,
                  block_size: int, author: str, message: str = "") -> None:
    """Make `root` (its trees and objects already stored) final version `vid` of p/`name`: the empty
    tree, the record, the state, written by hand as a test needs (no finalize, no tree pack)."""
    now = time.time()
    store.put(object_key(EMPTY_TREE_HASH), EMPTY_TREE_BYTES)
    rec = VersionRecord(id=vid, project="p", name=name, version="1", parents=(), root=root,
                        base=EMPTY_TREE_HASH, created=now, finalized=now, author=author, message=message,
                        files=files, nbytes=nbytes, block_size=block_size)
    store.put(record_key(vid), rec.encode())
    st = VersionState(id=vid, project="p", name=name, version="1", parents=(), state="final", tags=(),
                      description="", created=now, updated=now, author=author)
    store.put_conditional(state_key(vid), st.encode(), None)
