"""Object stores behind one small interface, chosen by URL: file:// (default) and s3://."""

from __future__ import annotations

import os
from pathlib import Path
from urllib.parse import urlparse

from fsmount.errors import UsageError
from fsmount.store.base import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "default_store_url", "open_store"]


def default_store_url() -> str:
    """The embedded default: a folder under $XDG_DATA_HOME, so nothing needs configuring."""
    data_home = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return f"file://{Path(data_home) / 'fsmount' / 'store'}"


def open_store(
    url: str | None = None, *, endpoint_url: str | None = None, **s3_options: object
) -> ObjectStore:
    """Open the store a URL names: file://PATH, a plain path, or s3://BUCKET[/PREFIX]."""
    url = url or os.environ.get("FSMOUNT_STORE") or default_store_url()
    if "://" not in url:
        if not url.startswith(("/", ".", "~")):
            raise UsageError(f"malformed store URL {url!r}: use file://PATH or s3://BUCKET[/PREFIX]")
        url = f"file://{Path(url).expanduser().resolve()}"
    parsed = urlparse(url)
    if parsed.scheme == "file":
        from fsmount.store.local import LocalStore

        path = (parsed.netloc + parsed.path) if parsed.netloc else parsed.path
        if not path:
            raise UsageError(f"malformed store URL {url!r}: file:// needs a path")
        return LocalStore(Path(path).expanduser())
    if parsed.scheme == "s3":
        from fsmount.store.s3 import S3Store

        bucket = parsed.netloc
        if not bucket or parsed.query or parsed.params:
            raise UsageError(f"malformed store URL {url!r}: use s3://BUCKET[/PREFIX]")
        return S3Store(bucket, parsed.path, endpoint_url=endpoint_url, **s3_options)  # type: ignore[arg-type]
    raise UsageError(f"unsupported store URL {url!r}: use file://PATH or s3://BUCKET[/PREFIX]")
