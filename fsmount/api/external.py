"""Staging external files (clearml's add_external_files): link entries for objects that stay at their URLs.

Every URL is listed and statted (and, with `hash`, read once) before anything is staged, so a URL
that cannot be reached or read stages nothing. A staged link is a journal `add` of kind `link`
whose `src` is the link entry as JSON (docs/FORMAT.md §12); close turns it into the tree entry.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from fsmount.errors import UsageError
from fsmount.format.objects import MAX_URL_BYTES, validate_name
from fsmount.format.tree_edit import split_path
from fsmount.store.external import LinkInfo, list_links, read_link, shown, stat_link

DEFAULT_LINK_MODE = 0o644
Progress = Callable[[int], None]


def _hash(info: LinkInfo, block_size: int, progress: Progress | None) -> tuple[bytes, tuple[bytes, ...]]:
    """(whole SHA-256, SHA-256 of every chunk), read once with the tag checked on every chunk."""
    whole = hashlib.sha256()
    chunks = []
    for offset in range(0, info.size, block_size):
        data = read_link(info.url, offset, min(block_size, info.size - offset), info.tag, info.size)
        whole.update(data)
        chunks.append(hashlib.sha256(data).digest())
        if progress:
            progress(len(data))
    return whole.digest(), tuple(chunks)


def link_events(
    source_url: str,
    *,
    wildcard: str | None = None,
    dataset_path: str | None = None,
    recursive: bool = True,
    hash_content: bool = False,
    block_size: int,
    progress: Progress | None = None,
) -> list[dict[str, Any]]:
    """Journal events staging every object `source_url` names under `dataset_path`."""
    if len(source_url.encode("utf-8", "surrogateescape")) > MAX_URL_BYTES:
        raise UsageError(f"link URL too long (over {MAX_URL_BYTES} bytes)")
    prefix = "/".join(split_path(dataset_path or ""))
    found = list_links(source_url, wildcard, recursive)
    with ThreadPoolExecutor(8) as pool:
        infos = list(pool.map(lambda f: stat_link(f[0]), found))
    events = []
    for (url, rel), info in zip(found, infos, strict=True):
        parts = split_path(rel)
        for part in parts:
            validate_name(part)
        sha, chunks = _hash(info, block_size, progress) if hash_content else (b"", ())
        if not info.tag and not hash_content:
            raise UsageError(f"external file {shown(url)}: its server gives no ETag or Last-Modified, so a "
                             "change could not be noticed; add it with --hash")
        entry = {"mode": DEFAULT_LINK_MODE, "mtime_ns": info.mtime_ns, "size": info.size, "url": info.url,
                 "tag": info.tag, "sha256": sha.hex(), "block_size": block_size,
                 "blocks": [c.hex() for c in chunks]}
        dest = "/".join([*split_path(prefix), *parts])
        events.append({"op": "add", "kind": "link", "path": dest, "src": json.dumps(entry)})
    return events
