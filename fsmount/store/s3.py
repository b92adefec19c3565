"""s3:// object store through boto3: any S3-compatible endpoint (AWS, MinIO, Ceph, moto)."""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from fsmount.config import s3_endpoint_url
from fsmount.errors import (
    AccessDenied,
    ConditionalWritesUnsupported,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnreachable,
)
from fsmount.store.base import (
    CONDITIONAL_WRITES_IGNORED,
    ObjectInfo,
    ObjectStore,
    content_hash,
)

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

# Whether each server (endpoint, bucket) honours If-None-Match / If-Match: probed once per process.
_CONDITIONAL_OK: dict[tuple[str, str], bool] = {}
_PROBE_LOCK = threading.Lock()


def _code(err: botocore.exceptions.ClientError) -> str:
    return str(err.response.get("Error", {}).get("Code", ""))


class S3Store(ObjectStore):
    """One bucket (and optional key prefix) as an object store.

    Retries with backoff on throttling and connection errors come from botocore's
    'adaptive' retry mode; the connection pool is sized for parallel transfers.
    """

    def __init__(
        self,
        bucket: str,
        prefix: str = "",
        *,
        endpoint_url: str | None = None,
        max_connections: int = 64,
        connect_timeout: float = 5.0,
        read_timeout: float = 30.0,
        max_attempts: int = 5,
    ) -> None:
        self.bucket = bucket
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        endpoint_url = s3_endpoint_url(endpoint_url)
        config = Config(
            retries={"max_attempts": max_attempts, "mode": "adaptive"},
            max_pool_connections=max_connections,
            connect_timeout=connect_timeout,
            read_timeout=read_timeout,
            tcp_keepalive=True,
        )
        self._session = boto3.session.Session()
        self._lock = threading.Lock()
        self.client = self._session.client("s3", endpoint_url=endpoint_url, config=config)
        self.endpoint_url = self.client.meta.endpoint_url

    def _key(self, key: str) -> str:
        return self.prefix + key

    def _call(self, what: str, fn: Any, **kwargs: Any) -> Any:
        try:
            return fn(Bucket=self.bucket, **kwargs)
        except botocore.exceptions.ClientError as e:
            code = _code(e)
            key = kwargs.get("Key", "")
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
        resp = self._call("get", self.client.get_object, Key=self._key(key))
        return resp["Body"].read()

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        rng = f"bytes={offset}-{offset + length - 1}"
        resp = self._call("get", self.client.get_object, Key=self._key(key), Range=rng)
        return resp["Body"].read()

    def head(self, key: str) -> ObjectInfo | None:
        try:
            resp = self._call("head", self.client.head_object, Key=self._key(key), ChecksumMode="ENABLED")
        except ObjectNotFound:
            return None
        return ObjectInfo(key, resp["ContentLength"], resp["LastModified"].timestamp(),
                          _sha256_of(resp.get("ChecksumSHA256")))

    def _put(self, key: str, data: bytes, sha256: bytes, **cond: str) -> Any:
        """PutObject with the body's SHA-256: the server refuses bytes that do not match it
        (BadDigest), and keeps it, so a later HEAD tells which object it holds."""
        return self._call(
            "put", self.client.put_object, Key=self._key(key), Body=data, ChecksumAlgorithm="SHA256",
            ChecksumSHA256=base64.b64encode(sha256).decode(), **cond,
        )

    def put(self, key: str, data: bytes) -> bool:
        meant = content_hash(key)
        sha256 = meant or hashlib.sha256(data).digest()
        for attempt in range(5):
            try:
                self._put(key, data, sha256, IfNoneMatch="*")
                return True
            except PreconditionFailed:
                # 412: the object exists. 409: another conditional write of it is in flight;
                # only trust "exists" once a HEAD sees it, and only if it is the object meant.
                info = self.head(key)
                if info is not None:
                    if meant is None or self.is_intact(info, len(data), meant):
                        return False
                    # Damaged (an interrupted upload kept by the server): overwrite it. A plain
                    # PUT replaces it atomically, and every writer of this key sends these bytes.
                    self._put(key, data, sha256)
                    return True
                time.sleep(0.05 * 2**attempt)
        raise StoreError(f"could not write {key} to {self.url}: concurrent writes kept conflicting")

    def _replace(self, key: str, data: bytes) -> None:
        self._put(key, data, hashlib.sha256(data).digest())  # a plain PUT replaces atomically

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        resp = self._call("get", self.client.get_object, Key=self._key(key))
        return resp["Body"].read(), resp["ETag"]

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        self.check_conditional_writes()
        cond = {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": if_match}
        resp = self._put(key, data, hashlib.sha256(data).digest(), **cond)
        return str(resp["ETag"])

    def check_conditional_writes(self) -> None:
        """Refuse (ConditionalWritesUnsupported) on a server that ignores If-None-Match/If-Match.

        Such servers (s3rver, older MinIO and Ceph releases, some proxies) answer 200 to a
        write whose condition does not hold, so a lost race would look like a success and
        overwrite another process's change. Probed once per server and process.
        """
        ident = (str(self.endpoint_url), self.bucket)
        ok = _CONDITIONAL_OK.get(ident)
        if ok is None:
            with _PROBE_LOCK:
                ok = _CONDITIONAL_OK.get(ident)
                if ok is None:
                    ok = self._probe_conditional_writes()
                    _CONDITIONAL_OK[ident] = ok
                    log.debug("%s honours conditional writes: %s", self.url, ok)
        if not ok:
            raise ConditionalWritesUnsupported(CONDITIONAL_WRITES_IGNORED)

    def _probe_conditional_writes(self) -> bool:
        """Create a probe object, then make two writes whose conditions cannot hold: both must fail."""
        key = f"locks/probe-{uuid.uuid4().hex}"
        body = b"fsmount conditional-write probe"
        sha = hashlib.sha256(body).digest()
        try:
            self._put(key, body, sha, IfNoneMatch="*")
        except StoreError as e:
            if any(code in str(e) for code in _UNSUPPORTED):
                return False  # refuses the header outright
            raise
        try:
            for cond in ({"IfNoneMatch": "*"}, {"IfMatch": '"0123456789abcdef0123456789abcdef"'}):
                try:
                    self._put(key, body, sha, **cond)
                    log.debug("%s accepted a PUT with %s that must fail", self.url, cond)
                    return False
                except PreconditionFailed:
                    pass
                except StoreError as e:
                    if any(code in str(e) for code in _UNSUPPORTED):
                        return False
                    raise
            return True
        finally:
            self.delete(key)

    def delete(self, key: str) -> None:
        self._call("delete", self.client.delete_object, Key=self._key(key))

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        paginator = self.client.get_paginator("list_objects_v2")
        strip = len(self.prefix)
        try:
            for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
                for obj in page.get("Contents", ()):
                    yield ObjectInfo(obj["Key"][strip:], obj["Size"], obj["LastModified"].timestamp())
        except botocore.exceptions.ClientError as e:
            self._call("list", _raiser(e))
        except botocore.exceptions.BotoCoreError as e:
            self._call("list", _raiser(e))

    def close(self) -> None:
        self.client.close()


def _sha256_of(checksum: object) -> bytes | None:
    """The raw SHA-256 of a full-object ChecksumSHA256 header (base64); None for composite ones."""
    if not isinstance(checksum, str) or "-" in checksum:
        return None
    try:
        raw = base64.b64decode(checksum, validate=True)
    except ValueError:
        return None
    return raw if len(raw) == 32 else None


def _raiser(exc: Exception) -> Any:
    def fn(**_: Any) -> None:
        raise exc

    return fn
