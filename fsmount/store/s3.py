"""s3:// object store through boto3: any S3-compatible endpoint (AWS, MinIO, Ceph, moto)."""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Iterator
from typing import Any

import boto3
import botocore.exceptions
from botocore.config import Config

from fsmount.config import s3_endpoint_url
from fsmount.errors import (
    AccessDenied,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnreachable,
)
from fsmount.store.base import ObjectInfo, ObjectStore

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
            resp = self._call("head", self.client.head_object, Key=self._key(key))
        except ObjectNotFound:
            return None
        return ObjectInfo(key, resp["ContentLength"], resp["LastModified"].timestamp())

    def put(self, key: str, data: bytes) -> bool:
        for attempt in range(5):
            try:
                self._call("put", self.client.put_object, Key=self._key(key), Body=data, IfNoneMatch="*")
                return True
            except PreconditionFailed:
                # 412: the object exists. 409: another conditional write of it is in flight;
                # only trust "exists" once a HEAD sees it.
                if self.head(key) is not None:
                    return False
                time.sleep(0.05 * 2**attempt)
        raise StoreError(f"could not write {key} to {self.url}: concurrent writes kept conflicting")

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        resp = self._call("get", self.client.get_object, Key=self._key(key))
        return resp["Body"].read(), resp["ETag"]

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        cond = {"IfNoneMatch": "*"} if if_match is None else {"IfMatch": if_match}
        resp = self._call("put", self.client.put_object, Key=self._key(key), Body=data, **cond)
        return resp["ETag"]

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


def _raiser(exc: Exception) -> Any:
    def fn(**_: Any) -> None:
        raise exc

    return fn
