"""Mount settings from /etc/fsmount/<name>.conf or an fstab options string, checked key by key.

Both map one to one onto the `fsmount mount` options; an unknown or missing key is refused
by name (exit code 78, EX_CONFIG, which systemd reports as a configuration error).
"""

from __future__ import annotations

from pathlib import Path

from fsmount.errors import FsmountError
from fsmount.service.request import MountRequest

EX_CONFIG = 78
CONF_DIR = Path("/etc/fsmount")


class ConfigError(FsmountError):
    """A conf file or fstab line that cannot be used as written."""

    exit_code = EX_CONFIG


MountSettings = MountRequest  # the settings a conf file or an fstab line describe


_VALUE_KEYS = {
    "store",
    "endpoint_url",
    "cache_dir",
    "cache_size",
    "overlay",
    "credentials_file",
    "log_level",
    "log_file",
    "metrics_file",
}
_BOOL_KEYS = {"allow_other", "write"}
# Options mount(8) and mount.fuse3 pass along that mean nothing to fsmount itself.
_MOUNT_NOISE = {
    "_netdev",
    "nofail",
    "noauto",
    "auto",
    "defaults",
    "user",
    "users",
    "nouser",
    "owner",
    "dev",
    "nodev",
    "suid",
    "nosuid",
    "exec",
    "noexec",
    "atime",
    "noatime",
    "relatime",
    "nodiratime",
    "diratime",
    "sync",
    "async",
    "rw",
    "ro",
}
# FUSE options passed through to the kernel mount as -o.
_FUSE_PASSTHROUGH = {"default_permissions", "allow_root", "max_read", "uid", "gid", "umask", "fsname"}


def _bool(key: str, value: str) -> bool:
    v = value.strip().lower()
    if v in ("1", "yes", "true", "on"):
        return True
    if v in ("0", "no", "false", "off"):
        return False
    raise ConfigError(f"{key}: expected yes or no, got {value!r}")


def _assign(s: MountSettings, key: str, value: str, where: str) -> None:
    key = key.strip().lower().replace("-", "_")
    if key in _VALUE_KEYS:
        setattr(s, key, value)
    elif key in _BOOL_KEYS:
        setattr(s, key, _bool(key, value))
    elif key == "metrics_port":
        try:
            s.metrics_port = int(value)
        except ValueError:
            raise ConfigError(f"{where}: metrics_port must be a number, got {value!r}") from None
    elif key == "timeout":
        try:
            s.timeout = float(value)
        except ValueError:
            raise ConfigError(f"{where}: timeout must be seconds, got {value!r}") from None
    elif key == "options":
        s.fuse_options += [o.strip() for o in value.split(",") if o.strip()]
    else:
        raise ConfigError(f"{where}: unknown key {key!r}")


def parse_conf(path: Path) -> MountSettings:
    """A conf file: `key = value` lines, '#' comments. `dataset` and `mountpoint` are required."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such file") from None
    except OSError as e:
        raise ConfigError(f"{path}: {e.strerror}") from None
    values: dict[str, str] = {}
    for n, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith(("#", ";")) or line == "[mount]":
            continue
        if "=" not in line:
            raise ConfigError(f"{path}:{n}: expected 'key = value', got {line!r}")
        k, _, v = line.partition("=")
        values[k.strip().lower().replace("-", "_")] = v.strip().strip('"').strip("'")
    for required in ("dataset", "mountpoint"):
        if not values.get(required):
            raise ConfigError(f"{path}: missing key {required!r}")
    s = MountSettings(values.pop("dataset"), values.pop("mountpoint"))
    for k, v in values.items():
        _assign(s, k, v, str(path))
    return s


def parse_fstab_options(ref: str, mountpoint: str, options: str) -> MountSettings:
    """An fstab options field, as mount.fuse3 passes it: 'ro,allow_other,cache_size=50GiB'."""
    s = MountSettings(ref, mountpoint)
    for opt in (o.strip() for o in options.split(",")):
        if not opt or opt in _MOUNT_NOISE or opt.startswith(("x-", "comment=")):
            continue  # 'rw' is noise too: mount(8) adds it by default; a writable mount says 'write'
        key, eq, value = opt.partition("=")
        key = key.replace("-", "_")
        if key in _FUSE_PASSTHROUGH:
            s.fuse_options.append(opt)
        elif key in _BOOL_KEYS and not eq:
            setattr(s, key, True)
        else:
            if not eq:
                raise ConfigError(f"fstab option {opt!r}: unknown option")
            _assign(s, key, value, "fstab option")
    return s


def load_credentials(path: str) -> dict[str, str]:
    """AWS_* variables from a credentials file of KEY=VALUE lines (systemd EnvironmentFile style)."""
    out: dict[str, str] = {}
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise ConfigError(f"credentials file {path}: {e.strerror}") from None
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        k, eq, v = line.removeprefix("export ").partition("=")
        if not eq:
            raise ConfigError(f"credentials file {path}: expected KEY=VALUE lines")
        out[k.strip()] = v.strip().strip('"').strip("'")
    return out
