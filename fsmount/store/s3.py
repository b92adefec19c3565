"""s3:// object store through botocore: any S3-compatible endpoint (AWS, MinIO, Ceph, moto)."""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

import botocore.exceptions
import botocore.session
from botocore.config import Config

from fsmount.config import s3_endpoint_url
from fsmount.errors import AccessDenied, ObjectNotFound, PreconditionFailed, StoreError, StoreUnreachable
from fsmount.store.base import CONDITIONAL_WRITES_IGNORED, ObjectInfo
from fsmount.store.cloud import CloudStore, sha256_of

log = logging.getLogger(__name__)

_NOT_FOUND = {"NoSuchKey", "404", "NotFound"}
_DENIED = {
    "AccessDenied",
    "403",
    "InvalidAccessKeyId",
    "SignatureDoesNotMatch",
    "ExpiredToken",
    "InvalidToken",
}
_PRECONDITION = {"PreconditionFailed", "412", "ConditionalRequestConflict", "409"}
_UNSUPPORTED = {"NotImplemented", "501"}
T = TypeVar("T")


def _code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class S3Store(CloudStore):
    """One bucket (and optional key prefix) as an object store.

    Retries with backoff on throttling and connection errors come from botocore's
    'adaptive' retry mode; the connection pool is sized for parallel transfers. Every PUT carries
    the body's SHA-256, which the server checks (BadDigest) and keeps, so a HEAD tells which object
    a key holds. A damaged content object is overwritten plainly (every writer sends those bytes).
    """

    _ignored = CONDITIONAL_WRITES_IGNORED
    _repair_if_unchanged = False
    _read_timeout = 30.0

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 **options: Any) -> None:
        super().__init__(f"s3://{bucket}", prefix, **options)  # options: cloud.Transfers' fields
        self.bucket = bucket
        endpoint_url = s3_endpoint_url(endpoint_url)
        t = self.transfers
        config = Config(
            retries={"max_attempts": t.max_attempts, "mode": "adaptive"},
            max_pool_connections=t.max_connections,
            connect_timeout=t.connect_timeout,
            read_timeout=t.read_timeout,
            tcp_keepalive=True,
            # Content objects are checked against their SHA-256 by every reader (a second SHA-256 by
            # botocore cost a quarter of a cold epoch's CPU); mutable ones ask for it (_checked).
            response_checksum_validation="when_required",
        )
        # botocore's own session: boto3 adds only its managed transfers (s3transfer), which nothing
        # here uses, for 0.12 s of every start (`fsmount mount` waits for it). Same credential chain,
        # region and config files.
        self.client = botocore.session.Session().create_client("s3", endpoint_url=endpoint_url, config=config)
        self.endpoint_url = self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        return self._guard(what, kwargs.get("Key", ""), lambda: fn(Bucket=self.bucket, **kwargs))

    def _guard(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except botocore.exceptions.ClientError as e:
            code = _code(e)
            if code in _NOT_FOUND:
                raise ObjectNotFound(f"object {key} not found in {self.url}") from None
            if code in _PRECONDITION:
                raise PreconditionFailed(f"{key} changed concurrently") from None
            if code == "NoSuchBucket":
                raise StoreError(f"bucket {self.bucket!r} does not exist") from None
            if code in _DENIED:
                raise AccessDenied(f"access denied by {self.url} ({code})") from None
            raise StoreError(f"{what} {self.url}: {code or e}") from None
        except botocore.exceptions.NoCredentialsError:
            raise AccessDenied(f"no credentials found for {self.url}") from None
        except (
            botocore.exceptions.EndpointConnectionError,
            botocore.exceptions.ConnectTimeoutError,
            botocore.exceptions.ReadTimeoutError,
            botocore.exceptions.ConnectionClosedError,
        ) as e:
            raise StoreUnreachable(f"cannot reach {self.endpoint_url}: {type(e).__name__}") from None
        except botocore.exceptions.BotoCoreError as e:
            raise StoreError(f"{what} {self.url}: {e}") from None

    def get(self, key: str) -> bytes:
        resp = self._call("get", self.client.get_object, Key=self._key(key), **_checked(key))
        return resp["Body"].read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        rng = f"bytes={offset}-{offset + length - 1}"
        resp = self._call("get", self.client.get_object, Key=self._key(key), Range=rng)
        return resp["Body"].read()

    def _stat(self, key: str) -> tuple[ObjectInfo, str] | None:
        try:
            resp = self._call("head", self.client.head_object, Key=self._key(key), ChecksumMode="ENABLED")
        except ObjectNotFound:
            return None
        return (ObjectInfo(key, resp["ContentLength"], resp["LastModified"].timestamp(),
                           _sha256_of(resp.get("ChecksumSHA256"))), str(resp.get("ETag", "")))

    def _write(self, key: str, data: bytes, version: str | None, *, create: bool = False) -> str:
        """PutObject with the body's SHA-256 (If-None-Match: * to create, If-Match: `version` to update);
        the server refuses bytes that do not match it (BadDigest), and keeps it for `head`."""
        cond = {"IfNoneMatch": "*"} if create else {"IfMatch": version} if version is not None else {}
        resp = self._call("put", self.client.put_object, Key=self._key(key), Body=data,
                          ChecksumAlgorithm="SHA256",
                          ChecksumSHA256=base64.b64encode(sha256_of(key, data)).decode(), **cond)
        return str(resp["ETag"])

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        resp = self._call("get", self.client.get_object, Key=self._key(key), ChecksumMode="ENABLED")
        return resp["Body"].read(), resp["ETag"]

    def _probe_ident(self) -> Hashable:
        return ("s3", str(self.endpoint_url), self.bucket)

    def _other_version(self, version: str) -> str:
        return '"0123456789abcdef0123456789abcdef"'

    def _refuses_conditions(self, err: StoreError) -> bool:
        return any(code in str(err) for code in _UNSUPPORTED)

    def _delete(self, key: str) -> None:
        self._call("delete", self.client.delete_object, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix)
        for page in self._iterate("list", prefix,
                                  lambda: paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix))):
            for obj in page.get("Contents", ()):
                yield ObjectInfo(obj["Key"][strip:], obj["Size"], obj["LastModified"].timestamp())

    def close(self) -> None:
        self.client.close()


def _checked(key: str) -> dict[str, str]:
    """Ask botocore to check the stored checksum of an object no reader checks by its name: states,
    records, indexes (content objects and attachment blobs are named by their SHA-256)."""
    return {} if key.startswith(("objects/", "attachments/")) else {"ChecksumMode": "ENABLED"}


def _sha256_of(checksum: object) -> bytes | None:
    """The raw SHA-256 of a full-object ChecksumSHA256 header (base64); None for composite ones."""
    if not isinstance(checksum, str) or "-" in checksum:
        return None
    try:
        raw = base64.b64decode(checksum, validate=True)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None

