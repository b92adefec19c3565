"""Object stores behind one small interface, chosen by URL: file:// (default) and s3://."""

from __future__ import annotations

from pathlib import Path
from urllib.parse import urlparse

from fsmount import config
from fsmount.config import default_store_url, normalise_store_url
from fsmount.store.base import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "default_store_url", "normalise_store_url", "open_store"]


def open_store(
    url: str | None = None, *, endpoint_url: str | None = None, **s3_options: object
) -> ObjectStore:
    """Open the store a URL names: file://PATH, a plain path, s3://BUCKET[/PREFIX] (see config.store_url)."""
    url = config.store_url(url)
    if url.startswith("file://"):
        from fsmount.store.local import LocalStore

        return LocalStore(Path(url.removeprefix("file://")))
    from fsmount.store.s3 import S3Store

    parsed = urlparse(url)
    return S3Store(parsed.netloc, parsed.path, endpoint_url=endpoint_url, **s3_options)  # type: ignore[arg-type]
