"""Reading external files (link entries) at their URLs, with the version tag checked on every read.

A link records a URL, a size and the store's version tag of the object when it was added:
S3's ETag (reads are `If-Match` it), an HTTP ETag or Last-Modified (compared on every response),
`mtime_ns:size` for a local file (compared before and after every read), and for any other
store URL that `open_store` knows (gs://, azure://, ...) its generation or ETag when the store
reports one, else `mtime:size`. A read of a source that changed raises `LinkChanged` naming the
URL, never different bytes.

Trust (docs/FORMAT.md §4, "Link entry"): whoever can write to the store chooses the URLs a
reader fetches. So reading (`check_allowed`) follows $FSMOUNT_LINK_ALLOW when it is set (URL
prefixes, matched by scheme, host, port and path prefix; a file:// path is compared after its
symlinks are resolved and opened without following a last symlink), and otherwise refuses
file:// to a process running as root. An http(s) link to a cloud metadata service or a
link-local address (169.254.0.0/16, fe80::/10: instance credentials) is refused unless the
allow-list names it; so is one with '.' or '..' path segments. Redirects are never followed,
and no read returns more than the chunk asked for.
"""

from __future__ import annotations

import base64
import email.utils
import http.client
import ipaddress
import logging
import os
import re
import socket
import stat
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from dataclasses import dataclass
from fnmatch import fnmatchcase
from typing import Any

from fsmount import config
from fsmount.errors import AccessDenied, IntegrityError, NotFoundError, ObjectNotFound, StoreError, UsageError
from fsmount.store import check_bucket, open_store
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

SCHEMES = ("file", "s3", "http", "https")  # read here; any other scheme goes through open_store
HTTP_TIMEOUT = 30.0


class LinkChanged(IntegrityError):
    """An external file is no longer what its link recorded (size, version tag or hash): EIO."""


@dataclass(frozen=True, slots=True)
class LinkInfo:
    """What a link records of its source when it is added."""

    url: str
    size: int
    tag: str
    mtime_ns: int


def split_url(url: str) -> tuple[str, str]:
    """(scheme, the rest) of a link URL; a URL without a scheme is a UsageError."""
    scheme, sep, rest = url.partition("://")
    if not sep or not scheme or not rest:
        raise UsageError(f"invalid link URL {url!r}: use file://PATH, s3://BUCKET/KEY, https://HOST/PATH")
    return scheme.lower(), rest


_SECRET_QUERY = re.compile(r"(?i)(sig|signature|credential|token|key|secret|password|pass|auth)")


def shown(url: str) -> str:
    """`url` for a message or a log: user info and signature-like query values (presigned URLs,
    SAS tokens) replaced by ***. The URL itself stays in the tree; it just never reaches a log."""
    try:
        u = urllib.parse.urlsplit(url)
    except ValueError:
        return "<an invalid URL>"
    netloc = u.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = u.query
    if query:
        query = "&".join(
            f"{k}=***" if _SECRET_QUERY.search(k) else (f"{k}={v}" if sep else k)
            for k, sep, v in (part.partition("=") for part in query.split("&")))
    return urllib.parse.urlunsplit((u.scheme, netloc, u.path, query, u.fragment))


def _file_path(url: str) -> str:
    rest = split_url(url)[1]
    if not rest.startswith("/"):
        raise UsageError(f"invalid link URL {url!r}: file:// takes an absolute path")
    return rest


# Never read unless FSMOUNT_LINK_ALLOW names them: cloud metadata services (instance credentials).
METADATA_HOSTS = ("metadata.google.internal", "metadata.goog", "metadata", "instance-data")


def _blocked_address(host: str) -> str | None:
    """Why `host` (a name or an address) is a metadata service or link-local, else None.
    A name is resolved, and refused if any of its addresses is such."""
    name = host.strip("[]").rstrip(".").lower()
    if name in METADATA_HOSTS or name.endswith(".internal"):
        return "a cloud metadata service"
    try:
        addrs = [ipaddress.ip_address(name)]
    except ValueError:
        try:
            addrs = [ipaddress.ip_address(str(a[4][0]).split("%", 1)[0])
                     for a in socket.getaddrinfo(name, None, proto=socket.IPPROTO_TCP)]
        except (OSError, UnicodeError, ValueError):
            return None  # unresolvable: the read fails on its own
    for a in addrs:
        mapped = getattr(a, "ipv4_mapped", None) or a
        if mapped.is_link_local or mapped.is_unspecified or mapped.is_multicast:
            return f"a link-local or special address ({mapped})"
    return None


def _same_origin_prefix(url: str, prefix: str) -> bool:
    """Whether `url` lies under allow-list entry `prefix`: same scheme, same host and port (no
    user info can smuggle another host in: "https://host" does not allow "https://host@evil/"),
    the same bucket, and a path that starts with the prefix's path."""
    u, p = urllib.parse.urlsplit(url), urllib.parse.urlsplit(prefix)
    if u.scheme.lower() != p.scheme.lower():
        return False
    if (u.hostname or "") != (p.hostname or "") or u.port != p.port:
        return False
    return u.path.startswith(p.path)


def _has_dot_segments(url: str) -> bool:
    path = urllib.parse.unquote(urllib.parse.urlsplit(url).path)
    return any(seg in (".", "..") for seg in path.split("/"))


def check_allowed(url: str) -> None:
    """Refuse (EACCES) to read a link URL this process may not follow (the module's trust rule)."""
    scheme, _ = split_url(url)
    allow = config.link_allow()
    target = url
    if scheme == "file":
        target = "file://" + os.path.realpath(_file_path(url))
        if allow is None and os.geteuid() == 0:
            raise AccessDenied(f"external file {shown(url)}: file:// links are not read as root unless "
                               "FSMOUNT_LINK_ALLOW lists them")
    elif scheme in ("http", "https"):
        if _has_dot_segments(url):
            raise AccessDenied(f"external file {shown(url)}: '.' or '..' in its path")
        why = _blocked_address(urllib.parse.urlsplit(url).hostname or "")
        if why is not None and not any(_same_origin_prefix(url, p) for p in allow or []):
            raise AccessDenied(f"external file {shown(url)}: its host is {why}; not read unless "
                               "FSMOUNT_LINK_ALLOW lists it")
    if allow is None:
        return
    for prefix in allow:
        if prefix.startswith("file://"):
            root = os.path.realpath(prefix.removeprefix("file://")).rstrip("/") + "/"
            if scheme == "file" and (target + "/").startswith("file://" + root):
                return
        elif scheme != "file" and "://" in prefix and not _has_dot_segments(url) \
                and _same_origin_prefix(target, prefix):
            return
    raise AccessDenied(f"external file {shown(url)}: not under FSMOUNT_LINK_ALLOW")


# -- local files ---------------------------------------------------------------------------


def _file_tag(st: os.stat_result) -> str:
    return f"{st.st_mtime_ns}:{st.st_size}"


def _file_info(url: str) -> LinkInfo:
    path = _file_path(url)
    try:
        st = os.stat(path)
    except FileNotFoundError:
        raise NotFoundError(f"external file {shown(url)}: no such file") from None
    except OSError as e:
        raise StoreError(f"external file {shown(url)}: {e.strerror}") from None
    if not stat.S_ISREG(st.st_mode):
        raise UsageError(f"external file {shown(url)}: not a regular file")
    return LinkInfo(url, st.st_size, _file_tag(st), st.st_mtime_ns)


def _file_read(url: str, offset: int, length: int, tag: str, size: int) -> bytes:
    path = os.path.realpath(_file_path(url))
    try:
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_CLOEXEC)
    except FileNotFoundError:
        raise LinkChanged(f"external file {shown(url)} is gone since it was added") from None
    except OSError as e:
        raise StoreError(f"external file {shown(url)}: {e.strerror}") from None
    try:
        before = os.fstat(fd)
        if _file_tag(before) != tag or before.st_size != size:
            raise LinkChanged(f"external file {shown(url)} changed since it was added "
                              f"(mtime:size was {tag}, now {_file_tag(before)})")
        data = os.pread(fd, length, offset)
        if _file_tag(os.fstat(fd)) != tag or len(data) != length:
            raise LinkChanged(f"external file {shown(url)} changed while it was read")
        return data
    finally:
        os.close(fd)


def _file_list(url: str, recursive: bool) -> Iterator[tuple[str, str]]:
    top = _file_path(url).rstrip("/") or "/"
    if not os.path.isdir(top):
        yield url, os.path.basename(top)
        return
    for dirpath, dirnames, filenames in os.walk(top):
        dirnames.sort()
        if not recursive:
            dirnames.clear()
        for name in sorted(filenames):
            full = os.path.join(dirpath, name)
            if os.path.isfile(full) and not os.path.islink(full):
                yield "file://" + full, os.path.relpath(full, top)


# -- S3 -------------------------------------------------------------------------------------

_S3: dict[str, Any] = {}  # bucket -> S3Store (opened through open_store, so boto3 loads only when used)
_S3_LOCK = threading.Lock()


def _s3(url: str) -> tuple[Any, str]:
    bucket, _, key = split_url(url)[1].partition("/")
    with _S3_LOCK:
        store = _S3.get(bucket)
        if store is None:
            store = _S3[bucket] = open_store(f"s3://{check_bucket(bucket)}")
    return store, key


def _s3_call(url: str, fn: Any, **kw: Any) -> Any:
    try:
        return fn(**kw)
    except Exception as e:
        if not type(e).__module__.startswith("botocore"):
            raise
        if not isinstance(getattr(e, "response", None), dict):  # a connection or client-side error
            raise StoreError(f"external file {shown(url)}: {type(e).__name__}") from None
        code = str(e.response.get("Error", {}).get("Code", ""))  # type: ignore[attr-defined]
        if code in ("PreconditionFailed", "412"):
            raise LinkChanged(
                f"external file {shown(url)} changed since it was added (its ETag differs)") from None
        if code in ("NoSuchKey", "404", "NotFound"):
            raise ObjectNotFound(f"external file {shown(url)}: not found") from None
        if code in ("AccessDenied", "403"):
            raise AccessDenied(f"external file {shown(url)}: access denied") from None
        raise StoreError(f"external file {shown(url)}: {code or e}") from None


def _s3_info(url: str) -> LinkInfo:
    store, key = _s3(url)
    try:
        r = _s3_call(url, store.client.head_object, Bucket=store.bucket, Key=key)
    except ObjectNotFound:
        raise NotFoundError(f"external file {shown(url)}: not found") from None
    mtime = int(r["LastModified"].timestamp() * 1e9)
    return LinkInfo(url, int(r["ContentLength"]), str(r["ETag"]), mtime)


def _s3_read(url: str, offset: int, length: int, tag: str, size: int) -> bytes:
    store, key = _s3(url)
    try:
        r = _s3_call(url, store.client.get_object, Bucket=store.bucket, Key=key, IfMatch=tag,
                     Range=f"bytes={offset}-{offset + length - 1}")
    except ObjectNotFound:
        raise LinkChanged(f"external file {shown(url)} is gone since it was added") from None
    total = str(r.get("ContentRange", "")).rpartition("/")[2]
    data = r["Body"].read(length + 1)
    if total != str(size) or len(data) != length:
        raise LinkChanged(f"external file {shown(url)} changed since it was added (size differs)")
    return data


def _s3_list(url: str, recursive: bool) -> Iterator[tuple[str, str]]:
    store, key = _s3(url)
    if key and not key.endswith("/"):
        try:
            _s3_info(url)
            yield url, key.rpartition("/")[2]
            return
        except NotFoundError:
            key += "/"
    pages = store.client.get_paginator("list_objects_v2").paginate(Bucket=store.bucket, Prefix=key)
    for page in _s3_call(url, lambda: list(pages)):
        for obj in page.get("Contents", []):
            rel = obj["Key"][len(key):]
            if rel and not rel.endswith("/") and (recursive or "/" not in rel):
                yield f"s3://{store.bucket}/{obj['Key']}", rel


# -- HTTP(S) ---------------------------------------------------------------------------------


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, req: Any, fp: Any, code: int, msg: str, headers: Any, newurl: str) -> None:
        raise urllib.error.HTTPError(req.full_url, code, f"redirect to {newurl} not followed", headers, fp)


_HTTP = urllib.request.build_opener(_NoRedirect)


def _http_tag(headers: Any) -> str:
    etag = headers.get("ETag")
    if etag:
        return str(etag)
    modified = headers.get("Last-Modified")
    return f"last-modified:{modified}" if modified else ""


def _http_open(url: str, **headers: str) -> Any:
    """GET `url`; user info in it (https://user:pass@host/) goes as Basic auth, never in the request line."""
    u = urllib.parse.urlsplit(url)
    target = url
    if "@" in u.netloc:
        user = urllib.parse.unquote(u.username or "")
        password = urllib.parse.unquote(u.password or "")
        headers["Authorization"] = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
        target = urllib.parse.urlunsplit((u.scheme, u.netloc.rpartition("@")[2], u.path, u.query, u.fragment))
    try:
        return _HTTP.open(urllib.request.Request(target, headers=headers, method="GET"), timeout=HTTP_TIMEOUT)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise NotFoundError(f"external file {shown(url)}: not found (HTTP 404)") from None
        raise StoreError(f"external file {shown(url)}: HTTP {e.code} {e.reason}") from None
    except (urllib.error.URLError, OSError, ValueError, http.client.HTTPException) as e:
        raise StoreError(f"external file {shown(url)}: cannot reach it ({_reason(url, e)})") from None


def _reason(url: str, e: BaseException) -> str:
    """An error's reason with any user info or query string of `url` in it masked."""
    text = str(getattr(e, "reason", e))
    u = urllib.parse.urlsplit(url)
    for secret in (u.netloc.rpartition("@")[0] if "@" in u.netloc else "", u.query, url):
        if secret:
            text = text.replace(secret, "***")
    return text


def _http_info(url: str) -> LinkInfo:
    with _http_open(url, Range="bytes=0-0") as r:
        size = r.headers.get("Content-Range", "").rpartition("/")[2] if r.status == 206 else \
            r.headers.get("Content-Length", "")
        tag, modified = _http_tag(r.headers), r.headers.get("Last-Modified")
    if not size.isdigit():
        raise UsageError(f"external file {shown(url)}: the server tells no size")
    when = email.utils.parsedate_to_datetime(modified).timestamp() if modified else time.time()
    return LinkInfo(url, int(size), tag, int(when * 1e9))


def _http_read(url: str, offset: int, length: int, tag: str, size: int) -> bytes:
    try:
        r = _http_open(url, Range=f"bytes={offset}-{offset + length - 1}")
    except NotFoundError:
        raise LinkChanged(f"external file {shown(url)} is gone since it was added") from None
    with r:
        whole = r.status == 200 and offset == 0 and length == size
        total = r.headers.get("Content-Range", "").rpartition("/")[2]
        if _http_tag(r.headers) != tag or not (whole or (r.status == 206 and total == str(size))):
            raise LinkChanged(
                f"external file {shown(url)} changed since it was added (its ETag or size differs)")
        data = r.read(length + 1)
    if len(data) != length:
        raise LinkChanged(f"external file {shown(url)} changed since it was added (size differs)")
    return data


# -- any other store URL (gs://, azure://, ...), through open_store -------------------------

_OTHER: dict[str, ObjectStore] = {}


def _other(url: str) -> tuple[ObjectStore, str]:
    scheme, rest = split_url(url)
    bucket, _, key = rest.partition("/")
    root = f"{scheme}://{bucket}"
    with _S3_LOCK:
        store = _OTHER.get(root)
        if store is None:
            store = _OTHER[root] = open_store(root)
    return store, key


def _other_tag(info: Any) -> str:
    for attr in ("generation", "etag"):  # what a store's ObjectInfo may carry
        value = getattr(info, attr, None)
        if value:
            return f"{attr}:{value}"
    return f"{info.mtime}:{info.size}"


def _other_info(url: str) -> LinkInfo:
    store, key = _other(url)
    info = store.head(key)
    if info is None:
        raise NotFoundError(f"external file {shown(url)}: not found")
    return LinkInfo(url, info.size, _other_tag(info), int(info.mtime * 1e9))


def _other_read(url: str, offset: int, length: int, tag: str, size: int) -> bytes:
    store, key = _other(url)
    for attempt in ("before", "after"):
        info = store.head(key)
        if info is None or info.size != size or _other_tag(info) != tag:
            raise LinkChanged(f"external file {shown(url)} changed since it was added")
        if attempt == "before":
            data = store.get_range(key, offset, length)
    if len(data) != length:
        raise LinkChanged(f"external file {shown(url)} changed since it was added (size differs)")
    return data


# -- the interface ---------------------------------------------------------------------------


def stat_link(url: str) -> LinkInfo:
    """Size, version tag and mtime of the object at `url`, as `add --links` records them."""
    scheme, _ = split_url(url)
    if scheme == "file":
        return _file_info(url)
    if scheme == "s3":
        return _s3_info(url)
    if scheme in ("http", "https"):
        return _http_info(url)
    return _other_info(url)


def read_link(url: str, offset: int, length: int, tag: str, size: int) -> bytes:
    """Exactly `length` bytes at `offset` of the object at `url`, which must still have `tag` and
    `size`; else LinkChanged. The caller has checked the URL with check_allowed."""
    if length == 0:
        return b""
    scheme, _ = split_url(url)
    if scheme == "file":
        return _file_read(url, offset, length, tag, size)
    if scheme == "s3":
        return _s3_read(url, offset, length, tag, size)
    if scheme in ("http", "https"):
        return _http_read(url, offset, length, tag, size)
    return _other_read(url, offset, length, tag, size)


def _url_name(url: str) -> str:
    """The file name a URL gives: its path's last part, %-decoded, without query or fragment."""
    path = urllib.parse.urlsplit(url).path if split_url(url)[0] in ("http", "https") else url
    name = urllib.parse.unquote(path.rstrip("/").rpartition("/")[2]) if path != url else \
        url.rstrip("/").rpartition("/")[2]
    if not name:
        raise UsageError(f"external file {shown(url)}: its URL names no file (give a path ending in a name)")
    return name


def list_links(url: str, wildcard: str | None = None, recursive: bool = True) -> list[tuple[str, str]]:
    """(url, path relative to `url`) of every object `url` names: itself, or what lies under it
    (a folder, an S3 prefix). `wildcard` matches file names (clearml's add_external_files)."""
    scheme, _ = split_url(url)
    if scheme == "file":
        found: Iterator[tuple[str, str]] = _file_list(url, recursive)
    elif scheme == "s3":
        found = _s3_list(url, recursive)
    else:  # one object, named by its URL's last path part (never its query: a signature, a SAS token)
        found = iter([(url, _url_name(url))])
    out = [(u, rel) for u, rel in found if wildcard is None or fnmatchcase(rel.rpartition("/")[2], wildcard)]
    if not out:
        raise NotFoundError(
            f"no external file at {shown(url)}" + (f" matching {wildcard!r}" if wildcard else ""))
    return out
