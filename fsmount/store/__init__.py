"""Object stores behind one small interface, chosen by URL: file:// (default) and s3://."""

from __future__ import annotations

import re
from pathlib import Path

from fsmount import config
from fsmount.config import default_store_url, normalise_store_url
from fsmount.errors import UsageError
from fsmount.store.base import ObjectInfo, ObjectStore

__all__ = ["ObjectInfo", "ObjectStore", "default_store_url", "normalise_store_url", "open_store"]


# S3's bucket naming rules: 3-63 characters, lowercase letters, digits, dots and hyphens,
# beginning and ending with a letter or digit.
_BUCKET = re.compile(r"[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]")


def check_bucket(bucket: str) -> str:
    if not _BUCKET.fullmatch(bucket):
        raise UsageError(
            f"invalid S3 bucket name {bucket!r}: 3-63 lowercase letters, digits, dots and hyphens"
        )
    return bucket


def open_store(
    url: str | None = None, *, endpoint_url: str | None = None, **s3_options: object
) -> ObjectStore:
    """Open the store a URL names: file://PATH, a plain path, s3://BUCKET[/PREFIX] (docs/FORMAT.md §2)."""
    url = config.store_url(url)  # normalised: file:///ABSOLUTE or s3://BUCKET[/PREFIX], split literally
    if url.startswith("file://"):
        from fsmount.store.local import LocalStore

        return LocalStore(Path(url.removeprefix("file://")))
    from fsmount.store.s3 import S3Store

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return S3Store(check_bucket(bucket), prefix, endpoint_url=endpoint_url, **s3_options)  # type: ignore[arg-type]
