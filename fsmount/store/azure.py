"""azure:// object store through azure-storage-blob: Azure Blob Storage or Azurite."""

from __future__ import annotations

import logging
from collections.abc import Callable, Hashable, Iterator
from typing import Any, TypeVar

from fsmount.config import AzureSettings
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
    import requests
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

    from fsmount.store.sessions import pooled
except ImportError as e:  # pragma: no cover - exercised by a subprocess test without the extra
    raise UsageError("azure:// stores need the azure extra: pip install 'fsmount[azure]'") from e

log = logging.getLogger(__name__)

SHA256_META = "fsmount_sha256"  # blob metadata names are C# identifiers: no hyphens
_OCTETS = ContentSettings(content_type="application/octet-stream")
_RANDOM_ETAG = '"0x8D0123456789ABC"'
T = TypeVar("T")


class AzureStore(CloudStore):
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
        **options: Any,
    ) -> None:
        super().__init__(f"azure://{account}/{container}", prefix, **options)  # cloud.Transfers' fields
        self.account, self.container = account, container
        self._ignored = CONDITIONAL_WRITES_IGNORED.format(what="this Azure Blob server",
                                                          cond="If-None-Match/If-Match")
        t = self.transfers
        session = pooled(requests.Session(), t.max_connections)
        sdk: dict[str, Any] = {
            "retry_policy": ExponentialRetry(initial_backoff=1, increment_base=2,
                                             retry_total=t.max_attempts - 1, random_jitter_range=1),
            "transport": RequestsTransport(session=session, session_owner=True,
                                           connection_timeout=t.connect_timeout, read_timeout=t.read_timeout),
            "connection_timeout": t.connect_timeout,
            "read_timeout": t.read_timeout,
        }
        self.client = self._client(settings, endpoint_url, sdk)
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
        else:
            credential = _default_credential(self.url)
        return ContainerClient(account_url, self.container, credential=credential, **options)

    def _blob(self, key: str) -> Any:
        return self.client.get_blob_client(self.prefix + key)

    def _call(self, what: str, key: str, fn: Any, *args: Any, **kwargs: Any) -> Any:
        return self._guard(what, key, lambda: fn(*args, **kwargs))

    def _guard(self, what: str, key: str, fn: Callable[[], T]) -> T:
        try:
            return fn()
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

    def get_versioned(self, key: str) -> tuple[bytes, str]:
        def fetch() -> tuple[bytes, str]:
            downloader = self._blob(key).download_blob(max_concurrency=4)
            return downloader.readall(), str(downloader.properties.etag)
        data, etag = self._call("get", key, fetch)
        return bytes(data), etag

    # -- writes ----------------------------------------------------------------------------------

    def _write(self, key: str, data: bytes, version: str | None, *, create: bool = False) -> str:
        """One Put Blob: If-None-Match: * to create, If-Match: `version` to update; the new ETag."""
        cond: dict[str, Any] = {"overwrite": not create}
        if version is not None:
            cond.update(etag=version, match_condition=MatchConditions.IfNotModified)
        resp = self._call("put", key, self._blob(key).upload_blob, data, length=len(data),
                          metadata={SHA256_META: sha256_hex(key, data)}, content_settings=_OCTETS,
                          validate_content=True, max_concurrency=4, **cond)
        return str(resp["etag"])

    def _probe_ident(self) -> Hashable:
        return ("azure", self.endpoint_url, self.container)

    def _other_version(self, version: str) -> str:
        return _RANDOM_ETAG

    def _delete(self, key: str) -> None:
        self._call("delete", key, self._blob(key).delete_blob)

    def list(self, prefix: str) -> Iterator[ObjectInfo]:
        strip = len(self.prefix)
        for props in self._iterate("list", prefix,
                                   lambda: self.client.list_blobs(name_starts_with=self.prefix + prefix)):
            yield ObjectInfo(props.name[strip:], int(props.size), props.last_modified.timestamp())

    def close(self) -> None:
        self.client.close()


def _code(e: AzureError) -> str:
    return str(getattr(e, "error_code", None) or getattr(e, "status_code", None) or type(e).__name__)


def _default_credential(url: str) -> Any:
    """azure-identity's DefaultAzureCredential, imported only when no key, SAS or connection string is
    set: it is optional, and a fifth of this module's import time (azure.identity pulls in msal)."""
    try:
        from azure.identity import DefaultAzureCredential
    except ImportError:
        raise AccessDenied(f"no Azure credentials for {url}: set AZURE_STORAGE_CONNECTION_STRING,"
                           " AZURE_STORAGE_KEY or AZURE_STORAGE_SAS_TOKEN,"
                           " or install azure-identity") from None
    return DefaultAzureCredential()
