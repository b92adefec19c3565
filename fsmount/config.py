"""Every environment variable and default path fsmount reads, resolved in one place (any layer may ask)."""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from urllib.parse import urlparse

from fsmount.errors import UsageError

DEFAULT_CACHE_SIZE = 20 * 2**30
DEFAULT_PACK_THRESHOLD = 2**20  # files smaller than this are packed (0: no packing)
DEFAULT_PACK_SIZE = 32 * 2**20  # the size a commit fills each pack object up to
MAX_PACK_SIZE = 2**30
MAX_SIZE = 2**63 - 1  # sizes end up in SQLite integers and file offsets: nothing larger means anything
_SIZE_RE = re.compile(r"^\s*(\d{1,30}(?:\.\d{1,30})?)\s*([KMGTPE]?)(i?)B?\s*$", re.IGNORECASE)


def data_home() -> Path:
    """$XDG_DATA_HOME/fsmount: drafts' staging journals, overlays, the current-draft pointer."""
    base = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(base) / "fsmount"


def private_dir(path: Path, what: str = "folder") -> Path:
    """`path` made (0700) if missing, and tightened to 0700 if it is ours and open to others.

    A shared folder (sticky, like /tmp) is refused, never tightened: run as root, tightening /tmp
    would lock every other user out of it.
    """
    path.mkdir(parents=True, exist_ok=True, mode=0o700)
    st = path.stat()
    if st.st_mode & 0o1000:
        raise UsageError(f"{what} {path} is a shared folder (sticky, like /tmp): give fsmount a folder of "
                         "its own, e.g. inside it")
    if st.st_uid == os.geteuid() and st.st_mode & 0o077:
        os.chmod(path, 0o700)
    return path


def default_store_url() -> str:
    """The embedded default: a folder under $XDG_DATA_HOME, so nothing needs configuring."""
    return f"file://{data_home() / 'store'}"


_STORE_FORMS = "file://PATH, s3://BUCKET[/PREFIX], gs://BUCKET[/PREFIX] or azure://ACCOUNT/CONTAINER[/PREFIX]"


def normalise_store_url(url: str) -> str:
    """The one spelling of a store URL, its identity: file:///absolute/resolved, s3://BUCKET[/PREFIX],
    gs://BUCKET[/PREFIX] or azure://ACCOUNT/CONTAINER[/PREFIX].

    Parsed literally as docs/FORMAT.md §2 says: no host part and no percent-decoding in file://
    (its PATH must start with '/', '~' or '.'); a plain path becomes file://; a cloud URL may hold
    no '?' or '#'; trailing slashes go. az://CONTAINER[/PREFIX] (adlfs's spelling) becomes
    azure://ACCOUNT/CONTAINER[/PREFIX] with the account from the environment (azure_settings()).
    Malformed or unsupported URLs are a UsageError.
    """
    if "://" not in url:
        if not url.startswith(("/", ".", "~")):
            raise UsageError(f"malformed store URL {url!r}: use {_STORE_FORMS}")
        return f"file://{_local_path(url, url)}"
    scheme, _, rest = url.partition("://")
    if scheme == "file":
        if not rest.startswith(("/", ".", "~")):
            raise UsageError(
                f"malformed store URL {url!r}: file:// takes no host; its path starts with '/', '~' or '.'"
            )
        return f"file://{_local_path(rest, url)}"
    if scheme in ("s3", "gs"):
        bucket, _, prefix = rest.partition("/")
        if not bucket or "?" in rest or "#" in rest:
            raise UsageError(f"malformed store URL {url!r}: use {scheme}://BUCKET[/PREFIX] (no '?' or '#')")
        prefix = prefix.strip("/")
        return f"{scheme}://{bucket}/{prefix}" if prefix else f"{scheme}://{bucket}"
    if scheme in ("azure", "az"):
        if "?" in rest or "#" in rest:
            raise UsageError(f"malformed store URL {url!r}: no '?' or '#' (a SAS token goes in"
                             " AZURE_STORAGE_SAS_TOKEN)")
        if scheme == "az":
            account = azure_settings().account
            if not account:
                raise UsageError(f"store URL {url!r} names no account: set AZURE_STORAGE_ACCOUNT or"
                                 " AZURE_STORAGE_CONNECTION_STRING, or use azure://ACCOUNT/CONTAINER[/PREFIX]")
            rest = f"{account}/{rest}"
        account, _, rest = rest.partition("/")
        container, _, prefix = rest.partition("/")
        if not account or not container:
            raise UsageError(f"malformed store URL {url!r}: use azure://ACCOUNT/CONTAINER[/PREFIX]"
                             " or az://CONTAINER[/PREFIX]")
        prefix = prefix.strip("/")
        return f"azure://{account}/{container}/{prefix}" if prefix else f"azure://{account}/{container}"
    raise UsageError(f"unsupported store URL {url!r}: use {_STORE_FORMS}")


def _local_path(path: str, url: str) -> Path:
    """PATH of a file:// store made absolute, `~` expanded, symlinks resolved."""
    try:
        return Path(path).expanduser().resolve()
    except (ValueError, OSError, RuntimeError) as e:  # a NUL, a name too long, a symlink loop, no home
        raise UsageError(f"malformed store URL {url!r}: {e}") from None


def store_url(given: str | None = None) -> str:
    """The store a command uses, normalised: `given`, else $FSMOUNT_STORE, else the default."""
    return normalise_store_url(given or os.environ.get("FSMOUNT_STORE") or default_store_url())


def default_cache_dir() -> Path:
    cache_home = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(cache_home) / "fsmount"


def cache_dir(given: str | os.PathLike[str] | None = None) -> Path:
    """The cache folder: `given`, else $FSMOUNT_CACHE_DIR, else $XDG_CACHE_HOME/fsmount."""
    return Path(given or os.environ.get("FSMOUNT_CACHE_DIR") or default_cache_dir())


def cache_size(given: str | int | None = None) -> int:
    """The cache byte cap: `given`, else $FSMOUNT_CACHE_SIZE, else 20 GiB."""
    if given:
        return parse_size(given, what="cache size")
    env = os.environ.get("FSMOUNT_CACHE_SIZE")
    return parse_size(env, what="FSMOUNT_CACHE_SIZE") if env else DEFAULT_CACHE_SIZE


def pack_threshold(given: str | int | None = None) -> int:
    """Files smaller than this are packed at commit: `given`, else $FSMOUNT_PACK_THRESHOLD, else 1 MiB.
    0 turns packing off (every file gets its own blocks, as before packs existed)."""
    if given is not None and given != "":
        return parse_size(given, what="pack threshold", maximum=MAX_PACK_SIZE)
    env = os.environ.get("FSMOUNT_PACK_THRESHOLD")
    if not env:
        return DEFAULT_PACK_THRESHOLD
    return parse_size(env, what="FSMOUNT_PACK_THRESHOLD", maximum=MAX_PACK_SIZE)


def pack_size(given: str | int | None = None) -> int:
    """Target size of a pack object: `given`, else $FSMOUNT_PACK_SIZE, else 32 MiB (4 KiB ... 1 GiB)."""
    text, what = (given, "pack size") if given is not None and given != "" else \
        (os.environ.get("FSMOUNT_PACK_SIZE"), "FSMOUNT_PACK_SIZE")
    if not text:
        return DEFAULT_PACK_SIZE
    value = parse_size(text, what=what, maximum=MAX_PACK_SIZE)
    if value < 4096:
        raise UsageError(f"invalid {what} {text!r}: a pack is at least 4 KiB")
    return value


def parse_size(text: str | int, *, what: str = "size", maximum: int = MAX_SIZE) -> int:
    """'20GiB', '512M', '1.5TB', '4096' -> bytes (binary and decimal units); absurd values refused."""
    if isinstance(text, int) and not isinstance(text, bool):
        value = text
    else:
        m = _SIZE_RE.match(str(text))
        if not m:
            raise UsageError(f"invalid {what} {text!r}: use a number with an optional unit, e.g. 20GiB")
        number, unit, binary = Fraction(m.group(1)), m.group(2).upper(), m.group(3)
        power = "KMGTPE".find(unit) + 1 if unit else 0
        value = int(number * (1024 if binary else 1000) ** power)
    if not 0 <= value <= maximum:
        raise UsageError(f"invalid {what} {text!r}: must be between 0 and {maximum} bytes")
    return value


def check_endpoint_url(url: str, what: str = "endpoint URL") -> str:
    """`url` if it is an http(s) URL with a host, else a UsageError naming `what`."""
    try:
        parsed = urlparse(url)
        port_ok = parsed.port is None or 0 < parsed.port < 65536
    except ValueError:  # a port that is not a number, a bad IPv6 literal
        port_ok, parsed = False, urlparse("")
    if parsed.scheme not in ("http", "https") or not parsed.hostname or not port_ok:
        raise UsageError(f"invalid {what} {url!r}: use http(s)://HOST[:PORT]")
    return url


def s3_endpoint_url(given: str | None = None) -> str | None:
    """The S3 endpoint: `given`, else $AWS_ENDPOINT_URL_S3, else $AWS_ENDPOINT_URL, else AWS's own."""
    if given:
        return check_endpoint_url(given)
    for var in ("AWS_ENDPOINT_URL_S3", "AWS_ENDPOINT_URL"):
        if os.environ.get(var):
            return check_endpoint_url(os.environ[var], var)
    return None


def gcs_endpoint_url(given: str | None = None) -> str | None:
    """A GCS emulator's endpoint: `given`, else $STORAGE_EMULATOR_HOST (as google-cloud-storage reads it);
    None means Google's own API with Application Default Credentials."""
    if given:
        return check_endpoint_url(given)
    host = os.environ.get("STORAGE_EMULATOR_HOST")
    if host:
        return check_endpoint_url(host if "://" in host else f"http://{host}", "STORAGE_EMULATOR_HOST")
    return None


@dataclass(frozen=True)
class AzureSettings:
    """Azure Blob credentials from the environment (az CLI's names; adlfs's *_NAME/*_KEY spellings too)."""

    connection_string: str | None = None
    account: str | None = None  # AZURE_STORAGE_ACCOUNT, else the connection string's AccountName
    key: str | None = None
    sas_token: str | None = None

    def connection_string_account(self) -> str | None:
        return connection_string_field(self.connection_string or "", "AccountName")

    def __repr__(self) -> str:  # never show the secrets
        return f"AzureSettings(account={self.account!r})"


def connection_string_field(conn: str, name: str) -> str | None:
    """One field of an Azure connection string (Name=value;...), names compared case-insensitively."""
    for part in conn.split(";"):
        k, eq, v = part.partition("=")
        if eq and k.strip().lower() == name.lower():
            return v.strip()
    return None


def azure_settings() -> AzureSettings:
    env = os.environ
    conn = env.get("AZURE_STORAGE_CONNECTION_STRING") or None
    account = (env.get("AZURE_STORAGE_ACCOUNT") or env.get("AZURE_STORAGE_ACCOUNT_NAME")
               or connection_string_field(conn or "", "AccountName") or None)
    return AzureSettings(
        connection_string=conn,
        account=account,
        key=env.get("AZURE_STORAGE_KEY") or env.get("AZURE_STORAGE_ACCOUNT_KEY") or None,
        sas_token=env.get("AZURE_STORAGE_SAS_TOKEN") or None,
    )


def runtime_dir() -> Path:
    """Mount registrations and logs: $FSMOUNT_RUNTIME_DIR, $XDG_RUNTIME_DIR/fsmount, data_home()/mounts."""
    if os.environ.get("FSMOUNT_RUNTIME_DIR"):
        return Path(os.environ["FSMOUNT_RUNTIME_DIR"])
    if os.environ.get("XDG_RUNTIME_DIR"):
        return Path(os.environ["XDG_RUNTIME_DIR"]) / "fsmount"
    return data_home() / "mounts"


def cache_local_store() -> bool:
    """$FSMOUNT_CACHE_LOCAL_STORE=1: copy even a local-disk file:// store into the cache."""
    return os.environ.get("FSMOUNT_CACHE_LOCAL_STORE", "") not in ("", "0")


def exec_daemon() -> bool:
    """$FSMOUNT_EXEC_DAEMON=1: `fsmount mount` starts its daemon as a new process instead of a fork."""
    return os.environ.get("FSMOUNT_EXEC_DAEMON", "") not in ("", "0")


def under_journald() -> bool:
    """True when stderr goes to journald ($JOURNAL_STREAM), which adds its own timestamps."""
    return bool(os.environ.get("JOURNAL_STREAM"))


def link_allow() -> list[str] | None:
    """$FSMOUNT_LINK_ALLOW: the URL prefixes external files (link entries) may be read from, or None.

    Whitespace-separated, e.g. "s3://bucket/raw/ file:///data/ https://host/"; unset means every
    s3://, gs://, azure:// and http(s):// URL, and file:// only for a process not running as root.
    """
    text = os.environ.get("FSMOUNT_LINK_ALLOW")
    return None if text is None else text.split()


def fuse_burst() -> int:
    """$FSMOUNT_FUSE_BURST: FUSE requests served back to back while more are waiting, before the
    event loop runs other work (default 16; 0 keeps pyfuse3's loop: a scheduler pass per request)."""
    text = os.environ.get("FSMOUNT_FUSE_BURST", "16")
    try:
        return max(0, int(text))
    except ValueError:
        raise UsageError(f"FSMOUNT_FUSE_BURST must be a whole number, not {text!r}") from None
