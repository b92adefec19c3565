"""Mount settings from /etc/fsmount/<name>.conf or an fstab options string, checked key by key.

Both map one to one onto the `fsmount mount` options: the keys are the conf keys of
service/request.py's OPTIONS table. An unknown or missing key is refused by name (exit code 78,
EX_CONFIG, which systemd reports as a configuration error).
"""

from __future__ import annotations

from pathlib import Path

from fsmount.service.request import EX_CONFIG, OPTIONS, ConfigError, MountRequest, Option

__all__ = ["EX_CONFIG", "ConfigError", "MountSettings", "parse_conf", "parse_fstab_options"]

MountSettings = MountRequest  # the settings a conf file or an fstab line describe

KEYS: dict[str, Option] = {opt.conf_key: opt for opt in OPTIONS if opt.conf_key}
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


def _assign(s: MountSettings, key: str, value: str, where: str) -> None:
    key = key.strip().lower().replace("-", "_")
    opt = KEYS.get(key)
    if opt is None:
        raise ConfigError(f"{where}: unknown key {key!r}")
    parsed = opt.parse(value, where)
    if opt.kind == "list":
        parsed = [*getattr(s, opt.name), *parsed]
    setattr(s, opt.name, parsed)


def _conf_value(raw: str, where: str) -> str:
    """A value: quoted ("..." or '...', taken as is) or bare, where ` #` or ` ;` starts a comment."""
    v = raw.strip()
    if v[:1] in ('"', "'"):
        end = v.find(v[0], 1)
        if end < 0:
            raise ConfigError(f"{where}: unterminated quote in {v!r}")
        rest = v[end + 1:].strip()
        if rest and not rest.startswith(("#", ";")):
            raise ConfigError(f"{where}: unexpected {rest!r} after the quoted value")
        return v[1:end]
    for i, ch in enumerate(v):
        if ch in "#;" and (i == 0 or v[i - 1].isspace()):
            return v[:i].rstrip()
    return v


def parse_conf(path: Path) -> MountSettings:
    """A conf file: `key = value` lines, '#' comments (also after a value, following a space).

    `dataset` and `mountpoint` are required. Quote a value that holds ` #` itself.
    """
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
        values[k.strip().lower().replace("-", "_")] = _conf_value(v, f"{path}:{n}")
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
        elif not eq and key in KEYS and KEYS[key].kind == "flag":
            setattr(s, KEYS[key].name, True)
        else:
            if not eq:
                raise ConfigError(f"fstab option {opt!r}: unknown option")
            _assign(s, key, value, "fstab option")
    return s

