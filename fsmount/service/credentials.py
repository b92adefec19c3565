"""Credentials files (KEY=VALUE lines): only credential keys, only from a file nobody else can read or change.

The mount daemon often runs as root and puts these values into its environment, so the file is
checked as ssh checks a private key: owned by the caller or root, in a folder only they can change,
not readable or writable by group or others, and holding credential variables only (a
`PYTHONPATH=` or `LD_PRELOAD=` line would make root run someone else's code).
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from fsmount.logs import register_secret
from fsmount.service.config import ConfigError

ALLOWED_KEYS = frozenset({
    "AWS_ACCESS_KEY_ID",
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AWS_DEFAULT_REGION",
    "AWS_REGION",
    "AWS_ENDPOINT_URL",
    "AWS_ENDPOINT_URL_S3",
    "AWS_PROFILE",
    "AWS_SHARED_CREDENTIALS_FILE",
    "AWS_CONFIG_FILE",
    "AWS_CA_BUNDLE",
    "GOOGLE_APPLICATION_CREDENTIALS",
    "STORAGE_EMULATOR_HOST",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_ACCOUNT",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ACCOUNT_NAME",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_CLIENT_ID",
    "AZURE_CLIENT_CERTIFICATE_PATH",
    "AZURE_FEDERATED_TOKEN_FILE",
    "AZURE_AUTHORITY_HOST",
    "CLOUDSDK_CONFIG",
    "AZURE_TENANT_ID",
    "AZURE_CLIENT_SECRET",
})
SECRET_KEYS = frozenset({
    "AWS_SECRET_ACCESS_KEY",
    "AWS_SESSION_TOKEN",
    "AZURE_STORAGE_CONNECTION_STRING",
    "AZURE_STORAGE_KEY",
    "AZURE_STORAGE_SAS_TOKEN",
    "AZURE_STORAGE_ACCOUNT_KEY",
    "AZURE_CLIENT_SECRET",
})
MAX_SIZE = 1 << 20


def _check_owner(what: str, st: os.stat_result, path: str) -> None:
    if st.st_uid not in (0, os.geteuid()):
        raise ConfigError(f"credentials file {path}: {what} belongs to uid {st.st_uid}, not to you or root")


def _check_folder(folder: str, path: str) -> None:
    try:
        st = os.stat(folder)
    except OSError as e:
        raise ConfigError(f"credentials file {path}: folder {folder}: {e.strerror}") from None
    _check_owner(f"its folder {folder}", st, path)
    if st.st_mode & 0o022 and not st.st_mode & stat.S_ISVTX:  # a sticky folder (/tmp) keeps our file ours
        raise ConfigError(f"credentials file {path}: its folder {folder} is writable by other users "
                          f"(mode {stat.S_IMODE(st.st_mode):04o})")


def _read_checked(path: str) -> str:
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NONBLOCK | os.O_NOCTTY)
    except OSError as e:
        raise ConfigError(f"credentials file {path}: {e.strerror}") from None
    st = os.fstat(fd)  # the file we read, not whatever the path names a moment later
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        raise ConfigError(f"credentials file {path}: not a regular file")
    with os.fdopen(fd, "rb") as f:
        _check_owner("the file", st, path)
        mode = stat.S_IMODE(st.st_mode)
        if mode & 0o022:
            raise ConfigError(f"credentials file {path} is writable by other users (mode {mode:04o}): "
                              f"chmod 600 {path}")
        if mode & 0o077:
            raise ConfigError(f"credentials file {path} is readable by other users (mode {mode:04o}): "
                              f"chmod 600 {path}")
        if st.st_size > MAX_SIZE:
            raise ConfigError(f"credentials file {path}: larger than {MAX_SIZE} bytes")
        data = f.read(MAX_SIZE + 1)
    for folder in {os.path.dirname(os.path.abspath(path)), os.path.dirname(os.path.realpath(path))}:
        _check_folder(folder, path)
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError:
        raise ConfigError(f"credentials file {path}: not UTF-8 text") from None


def _unquote(value: str) -> str:
    if len(value) >= 2 and value[0] == value[-1] and value[0] in ("'", '"'):
        return value[1:-1]
    return value


def load_credentials(path: str | os.PathLike[str]) -> dict[str, str]:
    """The credential variables of a KEY=VALUE file (systemd EnvironmentFile style), checked."""
    path = str(Path(path))
    out: dict[str, str] = {}
    for n, raw in enumerate(_read_checked(path).split("\n"), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        key, eq, value = line.removeprefix("export ").partition("=")
        key = key.strip()
        if not eq:
            raise ConfigError(f"credentials file {path}:{n}: expected KEY=VALUE")
        if key not in ALLOWED_KEYS:
            shown = key if key.isprintable() and len(key) <= 64 else repr(key[:64])
            raise ConfigError(f"credentials file {path}:{n}: {shown} is not a credential variable "
                              f"(allowed: {', '.join(sorted(ALLOWED_KEYS))})")
        if key in out:
            raise ConfigError(f"credentials file {path}:{n}: {key} is set twice")
        value = _unquote(value.strip())
        if any(c in value for c in "\0\r\n") or not value.isprintable():
            raise ConfigError(f"credentials file {path}:{n}: the value of {key} holds a control character")
        out[key] = value
        if key in SECRET_KEYS:
            register_secret(value)
    return out


def export_credentials(path: str | os.PathLike[str]) -> None:
    """Put a credentials file's checked variables into this process's environment (for boto3)."""
    os.environ.update(load_credentials(path))
