"""gs:// object store through google-cloud-storage: Google Cloud Storage or an emulator."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

from fsmount.errors import (
    AccessDenied,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnreachable,
    UsageError,
)
from fsmount.store.base import ObjectInfo
from fsmount.store.cloud import CONDITIONAL_WRITES_IGNORED, CloudStore, metadata_sha256, sha256_hex

try:
    import google.auth
    import google.auth.exceptions
    import requests
    from google.api_core import exceptions as gexc
    from google.api_core.retry import Retry
    from google.auth.credentials import AnonymousCredentials, Credentials
    from google.auth.transport.requests import AuthorizedSession
    from google.cloud import storage
    from google.cloud.storage.retry import DEFAULT_RETRY

    from fsmount.store.sessions import pooled
except ImportError as e:  # pragma: no cover - exercised by a subprocess test without the extra
    raise UsageError("gs:// stores need the gcs extra: pip install 'fsmount[gcs]'") from e

log = logging.getLogger(__name__)

SHA256_META = "fsmount-sha256"  # custom metadata: the SHA-256 of the body (GCS keeps crc32c and md5 only)
_SCOPES = ("https://www.googleapis.com/auth/devstorage.read_write",)
T = TypeVar("T")
_UNREACHABLE = (requests.exceptions.ConnectionError, requests.exceptions.Timeout,
                gexc.RetryError, gexc.ServiceUnavailable, gexc.GatewayTimeout)


class GCSStore(CloudStore):
    """One bucket (and optional name prefix) as an object store.

    Write-once creates send ifGenerationMatch=0, conditional updates ifGenerationMatch=<generation>
    (the generation is the etag). Uploads carry the body's CRC32C, which the service checks; the
    SHA-256 goes into custom metadata so `head` can tell which object a key holds. Retries with
    exponential backoff are google-cloud-storage's own (api_core Retry), bounded in total time.
    Each thread has its own client and connection pool, so transfers run in parallel.
    """

    def __init__(self, bucket: str, prefix: str = "", *, endpoint_url: str | None = None,
                 **options: Any) -> None:
        super().__init__(f"gs://{bucket}", prefix, **options)  # options: cloud.Transfers' fields
        self.bucket = bucket
        self.endpoint_url = endpoint_url  # an emulator (anonymous access), else Google's own API
        t = self.transfers
        self._timeout = (t.connect_timeout, t.read_timeout)
        # Every attempt may take a full timeout; the retry budget stops at about max_attempts of them.
        self._retry: Retry | None = None
        if t.max_attempts > 1:
            budget = (t.connect_timeout + t.read_timeout) * (t.max_attempts - 1) / 2 + 1.0
            self._retry = DEFAULT_RETRY.with_timeout(budget).with_delay(initial=0.2, maximum=8.0)
        self._local = threading.local()
        self._lock = threading.Lock()
        self._credentials: Credentials | None = None
        self._project: str | None = None
        self._sessions: list[requests.Session] = []
        self._closed = False
        self._ignored = CONDITIONAL_WRITES_IGNORED.format(what="this GCS server", cond="ifGenerationMatch")

    # -- clients ---------------------------------------------------------------------------------

    def _creds(self) -> tuple[Credentials, str | None]:
        with self._lock:
            if self._credentials is None:
                if self.endpoint_url:
                    self._credentials, self._project = AnonymousCredentials(), "fsmount"
                else:
                    try:
                        creds, project = google.auth.default(scopes=_SCOPES)
                    except google.auth.exceptions.DefaultCredentialsError:
                        raise AccessDenied(
                            f"no Google credentials found for {self.url}: set GOOGLE_APPLICATION_CREDENTIALS"
                            " or run `gcloud auth application-default login`"
                        ) from None
                    self._credentials, self._project = creds, project
            return self._credentials, self._project

    def _bucket(self) -> Any:
        bucket = getattr(self._local, "bucket", None)
        if bucket is None:
            creds, project = self._creds()
            session = pooled(AuthorizedSession(creds), self.transfers.max_connections)
            options = {"api_endpoint": self.endpoint_url} if self.endpoint_url else None
            client = storage.Client(project=project, credentials=creds, _http=session, client_options=options)
            bucket = client.bucket(self.bucket)
            self._local.bucket = bucket
            with self._lock:
                self._sessions.append(session)
        return bucket

    def _name(self, key: str) -> str:
        return self.prefix + key

    def _opts(self) -> dict[str, Any]:
        return {"timeout": self._timeout, "retry": self._retry}

    def _call(self, what: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self._guard(what, key, lambda: fn(*args, **kwargs))

    def _guard(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
        except gexc.NotFound as e:
            if "bucket" in str(e).lower() and "object" not in str(e).lower():
                raise StoreError(f"bucket {self.bucket!r} does not exist") from None
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None
        except gexc.PreconditionFailed:
            raise PreconditionFailed(f"{key} changed concurrently") from None
        except (gexc.Forbidden, gexc.Unauthorized) as e:
            raise AccessDenied(f"access denied by {self.url} ({e.code})") from None
        except (google.auth.exceptions.RefreshError, google.auth.exceptions.TransportError) as e:
            raise AccessDenied(f"Google credentials for {self.url} failed: {type(e).__name__}") from None
        except _UNREACHABLE as e:
            where = self.endpoint_url or "storage.googleapis.com"
            raise StoreUnreachable(f"cannot reach {where}: {type(e).__name__}") from None
        except gexc.GoogleAPICallError as e:
            raise StoreError(f"{what} {self.url}: {e.code} {e.message}") from None
        except (ValueError, OSError) as e:  # DataCorruption (a checksum mismatch) is a ValueError
            raise StoreError(f"{what} {key} in {self.url}: {type(e).__name__}: {e}") from None

    # -- reads -----------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        blob = self._bucket().blob(self._name(key))
        return bytes(self._call("get", key, blob.download_as_bytes, checksum="auto", **self._opts()))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        blob = self._bucket().blob(self._name(key))
        try:
            return bytes(self._call("get", key, blob.download_as_bytes, start=offset,
                                    end=offset + length - 1, checksum=None, **self._opts()))
        except StoreError as e:
            if "416" in str(e):  # offset at or past the end
                return b""
            raise

    def _stat(self, key: str) -> tuple[ObjectInfo, str] | None:
        blob = self._call("head", key, self._bucket().get_blob, self._name(key), **self._opts())
        if blob is None:
            return None
        return _info(key, blob), str(blob.generation)

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        blob = self._bucket().blob(self._name(key))
        data = self._call("get", key, blob.download_as_bytes, checksum="auto", **self._opts())
        return bytes(data), str(blob.generation)

    # -- writes ----------------------------------------------------------------------------------

    def _write(self, key: str, data: bytes, version: str | None, *, create: bool = False) -> str:
        """One upload with ifGenerationMatch: 0 to create, `version` to update; the new generation."""
        cond: dict[str, int] = {}
        if create:
            cond["if_generation_match"] = 0
        elif version is not None:
            try:
                cond["if_generation_match"] = int(version)
            except ValueError:
                raise PreconditionFailed(f"{key} changed concurrently (generation {version!r})") from None
        blob = self._bucket().blob(self._name(key))
        blob.metadata = {SHA256_META: sha256_hex(key, data)}
        self._call("put", key, blob.upload_from_string, data, content_type="application/octet-stream",
                   checksum="crc32c", **cond, **self._opts())
        return str(blob.generation)

    def _probe_ident(self) -> Hashable:
        return ("gs", str(self.endpoint_url), self.bucket)

    def _other_version(self, version: str) -> str:
        return str(int(version) + 987654321)

    def _delete(self, key: str) -> None:
        self._call("delete", key, self._bucket().delete_blob, self._name(key), **self._opts())

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self.prefix)
        bucket = self._bucket()
        for blob in self._iterate("list", prefix, lambda: bucket.client.list_blobs(
                bucket, prefix=self._name(prefix), fields="items(name,size,updated),nextPageToken",
                **self._opts())):
            yield ObjectInfo(blob.name[strip:], int(blob.size or 0), blob.updated.timestamp())

    def close(self) -> None:
        with self._lock:
            sessions, self._sessions = self._sessions, []
        for s in sessions:
            s.close()


def _info(key: str, blob: Any) -> ObjectInfo:
    return ObjectInfo(key, int(blob.size or 0), blob.updated.timestamp(),
                      metadata_sha256((blob.metadata or {}).get(SHA256_META)))
