"""Object stores behind one small interface, chosen by URL: file:// (default), s3://, gs://, azure://."""

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


# Google Cloud Storage: 3-63 characters (up to 222 with dots), lowercase letters, digits, '-', '_', '.'.
_GCS_BUCKET = re.compile(r"[a-z0-9][a-z0-9._-]{1,220}[a-z0-9]")
# Azure: accounts 3-24 lowercase letters and digits; containers 3-63 of [a-z0-9-], no '--'.
_AZ_ACCOUNT = re.compile(r"[a-z0-9]{3,24}")
_AZ_CONTAINER = re.compile(r"(?!.*--)[a-z0-9][a-z0-9-]{1,61}[a-z0-9]")


def _checked(pattern: re.Pattern[str], name: str, what: str, rule: str) -> str:
    if not pattern.fullmatch(name):
        raise UsageError(f"invalid {what} {name!r}: {rule}")
    return name


def open_store(
    url: str | None = None, *, endpoint_url: str | None = None, **options: object
) -> ObjectStore:
    """Open the store a URL names: file://PATH, a plain path, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX],
    azure://ACCOUNT/CONTAINER[/PREFIX] or az://CONTAINER[/PREFIX] (docs/FORMAT.md §2).

    `endpoint_url` points the cloud SDK at another server (MinIO, an emulator, Azurite's account URL);
    `options` are the stores' own (connect_timeout, read_timeout, max_attempts, max_connections).
    A cloud store whose SDK is not installed is a UsageError naming the extra to install.
    """
    url = config.store_url(url)  # normalised, split literally
    if url.startswith("file://"):
        from fsmount.store.local import LocalStore

        return LocalStore(Path(url.removeprefix("file://")))
    if url.startswith("gs://"):
        from fsmount.store.gcs import GCSStore

        bucket, _, prefix = url.removeprefix("gs://").partition("/")
        _checked(_GCS_BUCKET, bucket, "GCS bucket name", "3-222 lowercase letters, digits, '-', '_' and '.'")
        return GCSStore(bucket, prefix, endpoint_url=config.gcs_endpoint_url(endpoint_url),
                        **options)
    if url.startswith("azure://"):
        from fsmount.store.azure import AzureStore

        account, _, rest = url.removeprefix("azure://").partition("/")
        container, _, prefix = rest.partition("/")
        _checked(_AZ_ACCOUNT, account, "Azure storage account", "3-24 lowercase letters and digits")
        _checked(_AZ_CONTAINER, container, "Azure container name",
                 "3-63 lowercase letters, digits and single hyphens")
        endpoint = config.check_endpoint_url(endpoint_url) if endpoint_url else None
        return AzureStore(account, container, prefix, settings=config.azure_settings(), endpoint_url=endpoint,
                          **options)
    from fsmount.store.s3 import S3Store

    bucket, _, prefix = url.removeprefix("s3://").partition("/")
    return S3Store(check_bucket(bucket), prefix, endpoint_url=endpoint_url, **options)
