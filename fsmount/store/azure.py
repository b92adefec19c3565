"""azure:// object store through azure-storage-blob: Azure Blob Storage or Azurite."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Iterator
from typing import Any

from fsmount.config import AzureSettings
from fsmount.errors import (
    AccessDenied,
    ConditionalWritesUnsupported,
    ObjectNotFound,
    PreconditionFailed,
    StoreError,
    StoreUnreachable,
    UsageError,
)
from fsmount.store.base import ObjectInfo, ObjectStore, content_hash
from fsmount.store.cloud import (
    CONDITIONAL_WRITES_IGNORED,
    conditional_writes_probed,
    metadata_sha256,
    sha256_hex,
)

try:
    import requests
    import requests.adapters
    from azure.core import MatchConditions
    from azure.core.exceptions import (
        AzureError,
        ClientAuthenticationError,
        HttpResponseError,
        ResourceExistsError,
        ResourceModifiedError,
        ResourceNotFoundError,
        ServiceRequestError,
        ServiceResponseError,
    )
    from azure.core.pipeline.transport import RequestsTransport
    from azure.storage.blob import ContainerClient, ContentSettings, ExponentialRetry
except ImportError as e:  # pragma: no cover - exercised by a subprocess test without the extra
    raise UsageError("azure:// stores need the azure extra: pip install 'fsmount[azure]'") from e

try:
    from azure.identity import DefaultAzureCredential as _DefaultAzureCredential

    DefaultAzureCredential: Any = _DefaultAzureCredential
except ImportError:  # optional: keys, SAS tokens and connection strings work without it
    DefaultAzureCredential = None

log = logging.getLogger(__name__)

SHA256_META = "fsmount_sha256"  # blob metadata names are C# identifiers: no hyphens
_OCTETS = ContentSettings(content_type="application/octet-stream")
_RANDOM_ETAG = '"0x8D0123456789ABC"'


class AzureStore(ObjectStore):
    """One container (and optional name prefix) of a storage account as an object store.

    Write-once creates send If-None-Match: *, conditional updates If-Match: <ETag>. Uploads carry a
    transactional Content-MD5 that the service checks; the SHA-256 goes into blob metadata so `head`
    can tell which object a key holds. Retries with exponential backoff are the SDK's own
    (ExponentialRetry); connect and read timeouts bound every attempt. One client, thread-safe,
    with a connection pool sized for parallel transfers.
    """

    def __init__(
        self,
        account: str,
        container: str,
        prefix: str = "",
        *,
        settings: AzureSettings,
        endpoint_url: str | None = None,
        max_connections: int = 64,
        connect_timeout: float = 5.0,
        read_timeout: float = 60.0,
        max_attempts: int = 5,
    ) -> None:
        self.account, self.container = account, container
        self.prefix = prefix.strip("/") + "/" if prefix.strip("/") else ""
        self.url = f"azure://{account}/{container}/{self.prefix}".rstrip("/")
        session = requests.Session()
        adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=max_connections)
        session.mount("https://", adapter)
        session.mount("http://", adapter)
        options: dict[str, Any] = {
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2,
                                             retry_total=max_attempts - 1, random_jitter_range=1),
            "transport": RequestsTransport(session=session, session_owner=True,
                                           connection_timeout=connect_timeout, read_timeout=read_timeout),
            "connection_timeout": connect_timeout,
            "read_timeout": read_timeout,
        }
        self.client = self._client(settings, endpoint_url, options)
        self.endpoint_url = self.client.url.rsplit("/", 1)[0]

    def _client(self, s: AzureSettings, endpoint_url: str | None, options: dict[str, Any]) -> Any:
        if s.connection_string and not endpoint_url:
            conn_account = s.connection_string_account()
            if conn_account and conn_account != self.account:
                raise UsageError(f"AZURE_STORAGE_CONNECTION_STRING is for account {conn_account!r},"
                                 f" not {self.account!r}")
            return ContainerClient.from_connection_string(s.connection_string, self.container, **options)
        account_url = endpoint_url or f"https://{self.account}.blob.core.windows.net"
        credential: Any
        if s.key:
            credential = {"account_name": self.account, "account_key": s.key}
        elif s.sas_token:
            credential = s.sas_token.lstrip("?")
        elif DefaultAzureCredential is not None:
            credential = DefaultAzureCredential()
        else:
            raise AccessDenied(f"no Azure credentials for {self.url}: set AZURE_STORAGE_CONNECTION_STRING,"
                               " AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN, or install azure-identity")
        return ContainerClient(account_url, self.container, credential=credential, **options)

    def _blob(self, key: str) -> Any:
        return self.client.get_blob_client(self.prefix + key)

    def _call(self, what: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        """Run one SDK call; its failures become fsmount's errors."""
        try:
            return fn(*args, **kwargs)
        except ResourceNotFoundError as e:
            if getattr(e, "error_code", None) == "ContainerNotFound":
                raise StoreError(f"container {self.container!r} does not exist in {self.account}") from None
            raise ObjectNotFound(f"object {key} not found in {self.url}") from None
        except (ResourceExistsError, ResourceModifiedError):
            raise PreconditionFailed(f"{key} changed concurrently") from None
        except ClientAuthenticationError as e:
            raise AccessDenied(f"access denied by {self.url} ({_code(e)})") from None
        except HttpResponseError as e:
            if e.status_code == 412:
                raise PreconditionFailed(f"{key} changed concurrently") from None
            if e.status_code in (401, 403):
                raise AccessDenied(f"access denied by {self.url} ({_code(e)})") from None
            raise StoreError(f"{what} {self.url}: {e.status_code} {_code(e)}") from None
        except (ServiceRequestError, ServiceResponseError) as e:
            raise StoreUnreachable(f"cannot reach {self.endpoint_url}: {type(e).__name__}") from None
        except AzureError as e:
            raise StoreError(f"{what} {self.url}: {type(e).__name__}") from None

    # -- reads -----------------------------------------------------------------------------------

    def get(self, key: str) -> bytes:
        return bytes(self._call("get", key,
                                lambda: self._blob(key).download_blob(max_concurrency=4).readall()))

    def get_range(self, key: str, offset: int, length: int) -> bytes:
        if length <= 0:
            return b""
        try:
            return bytes(self._call("get", key, lambda: self._blob(key).download_blob(
                offset=offset, length=length, max_concurrency=4).readall()))
        except StoreError as e:
            if "416" in str(e):  # offset at or past the end
                return b""
            raise

    def _stat(self, key: str) -> tuple[ObjectInfo, str] | None:
        try:
            props = self._call("head", key, self._blob(key).get_blob_properties)
        except ObjectNotFound:
            return None
        sha = metadata_sha256((props.metadata or {}).get(SHA256_META))
        return ObjectInfo(key, int(props.size), props.last_modified.timestamp(), sha), str(props.etag)

    def head(self, key: str) -> ObjectInfo | None:
        found = self._stat(key)
        return found[0] if found else None

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        def fetch() -> tuple[bytes, str]:
            downloader = self._blob(key).download_blob(max_concurrency=4)
            return downloader.readall(), str(downloader.properties.etag)
        data, etag = self._call("get", key, fetch)
        return bytes(data), etag

    # -- writes ----------------------------------------------------------------------------------

    def _upload(self, key: str, data: bytes, etag: str | None, *, create: bool = False) -> str:
        """Upload `data`: only if absent (`create`), only over `etag`, or unconditionally; the new ETag."""
        cond: dict[str, Any] = {"overwrite": not create}
        if etag is not None:
            cond.update(etag=etag, match_condition=MatchConditions.IfNotModified)
        resp = self._call("put", key, self._blob(key).upload_blob, data, length=len(data),
                          metadata={SHA256_META: sha256_hex(key, data)}, content_settings=_OCTETS,
                          validate_content=True, max_concurrency=4, **cond)
        return str(resp["etag"])

    def put(self, key: str, data: bytes) -> bool:
        meant = content_hash(key)
        for attempt in range(5):
            try:
                self._upload(key, data, None, create=True)
                return True
            except PreconditionFailed:
                found = self._stat(key)
                if found is not None:
                    info, etag = found
                    if meant is None or self.is_intact(info, len(data), meant):
                        return False
                    try:  # damaged: replace exactly that object, so a racing repair is not undone
                        self._upload(key, data, etag)
                        return True
                    except PreconditionFailed:
                        pass
                time.sleep(0.05 * 2**attempt)
        raise StoreError(f"could not write {key} to {self.url}: concurrent writes kept conflicting")

    def _replace(self, key: str, data: bytes) -> None:
        self._upload(key, data, None)  # Put Blob replaces the blob atomically

    def put_conditional(self, key: str, data: bytes, if_match: str | None) -> str:
        self.check_conditional_writes()
        if if_match is None:
            return self._upload(key, data, None, create=True)
        return self._upload(key, data, if_match)

    def check_conditional_writes(self) -> None:
        """Refuse (ConditionalWritesUnsupported) a server ignoring If-None-Match/If-Match (probed once)."""
        if not conditional_writes_probed(("azure", self.endpoint_url, self.container), self._probe):
            raise ConditionalWritesUnsupported(CONDITIONAL_WRITES_IGNORED.format(
                what="this Azure Blob server", cond="If-None-Match/If-Match"))

    def _probe(self) -> bool:
        """Create a probe blob, then make two writes whose conditions cannot hold: both must fail."""
        key = f"locks/probe-{uuid.uuid4().hex}"
        body = b"fsmount conditional-write probe"
        self._upload(key, body, None, create=True)
        try:
            for etag, create in ((None, True), (_RANDOM_ETAG, False)):
                try:
                    self._upload(key, body, etag, create=create)
                    log.debug("%s accepted an upload with a condition that must fail", self.url)
                    return False
                except PreconditionFailed:
                    pass
            return True
        finally:
            self.delete(key)

    def delete(self, key: str) -> None:
        try:
            self._call("delete", key, self._blob(key).delete_blob)
        except ObjectNotFound:
            pass

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self.prefix)
        it = iter(self._call("list", prefix, self.client.list_blobs, name_starts_with=self.prefix + prefix))
        while True:
            props = self._call("list", prefix, next, it, None)
            if props is None:
                return
            yield ObjectInfo(props.name[strip:], int(props.size), props.last_modified.timestamp())

    def close(self) -> None:
        self.client.close()


def _code(e: AzureError) -> str:
    return str(getattr(e, "error_code", None) or getattr(e, "status_code", None) or type(e).__name__)
