"""What a mount is asked for: one record whose fields are the table the CLI, conf files and fstab derive from.

Each option field of `MountRequest` carries an `Option` (its kind, help, metavar, and whether it
is a conf/fstab key). `fsmount mount`'s click options (cli/mount_commands.py), the conf-file keys
and the fstab options (service/config.py) and the daemon's command line (`cli_args`) are all
generated from `OPTIONS`, so a new mount option is one new field here.
"""

from __future__ import annotations

import dataclasses
import math
import os
from dataclasses import dataclass, field
from typing import Any, Literal

from fsmount import config
from fsmount.errors import UsageError

DEFAULT_TIMEOUT = 30.0
EX_CONFIG = 78
LOG_LEVELS = ("debug", "info", "warning", "error")
# How an option's text is read and checked: text, path (made absolute), size (20GiB), url (http(s)),
# level (LOG_LEVELS), port (1..65535), seconds (finite, > 0), flag (yes/no), list (comma separated).
Kind = Literal["text", "path", "size", "url", "level", "port", "seconds", "flag", "list"]


class ConfigError(UsageError):
    """A conf file or fstab line that cannot be used as written (exit 78, EX_CONFIG, for systemd)."""

    exit_code = EX_CONFIG


@dataclass(frozen=True)
class Option:
    """One mount option: `--name` on the CLI (or `flags`), `name` as a conf key and an fstab option."""

    kind: Kind
    help: str
    metavar: str = ""
    key: str | None = ""  # conf/fstab key: "" means the field's name, None means CLI only
    flags: tuple[str, ...] = ()  # CLI spellings; default --name-with-dashes
    name: str = ""  # filled in from the field

    @property
    def conf_key(self) -> str | None:
        return self.name if self.key == "" else self.key

    @property
    def cli_flags(self) -> tuple[str, ...]:
        return self.flags or (f"--{self.name.replace('_', '-')}",)

    def parse(self, text: str, where: str = "", error: type[UsageError] = ConfigError,
              label: str | None = None) -> Any:
        """The value of this option written as text (a conf value, an fstab value, a CLI word).

        A bad value raises `error` with `where` (a file, 'fstab option') and `label` (the key or flag).
        """
        what = f"{where}: {label or self.name}" if where else (label or self.name)
        if self.kind == "flag":
            v = text.strip().lower()
            if v in ("1", "yes", "true", "on"):
                return True
            if v in ("0", "no", "false", "off"):
                return False
            raise error(f"{what}: expected yes or no, got {text!r}")
        if self.kind == "list":
            return [o.strip() for o in text.split(",") if o.strip()]
        if self.kind == "port":
            try:
                return int(text)
            except ValueError:
                raise error(f"{what} must be a number, got {text!r}") from None
        if self.kind == "seconds":
            try:
                return float(text)
            except ValueError:
                raise error(f"{what} must be seconds, got {text!r}") from None
        return text


def option(kind: Kind, help: str, metavar: str = "", **kw: Any) -> Any:
    """A MountRequest field that is a mount option (None, False or [] when not given)."""
    spec = Option(kind, help, metavar, **kw)
    if kind == "list":
        return field(default_factory=list, metadata={"option": spec})
    return field(default=False if kind == "flag" else None, metadata={"option": spec})


@dataclass
class MountRequest:
    """Everything `fsmount mount` accepts. None means "not given": a default or the group's option."""

    ref: str
    mountpoint: str
    store: str | None = option("text", "Store URL (file://, s3://, gs:// or azure://).", "URL")
    endpoint_url: str | None = option("url", "S3 endpoint (MinIO, Ceph, moto...).", "URL")
    cache_dir: str | None = option("path", "Local cache folder.", "DIR")
    cache_size: str | None = option("size", "Cache byte cap, e.g. 20GiB.", "SIZE")
    overlay: str | None = option(
        "path", "Overlay folder for --write [$XDG_DATA_HOME/fsmount/overlays/<key>].", "DIR")
    credentials_file: str | None = option(
        "path", "KEY=VALUE lines (AWS_ACCESS_KEY_ID=...) for the store.", "FILE")
    log_level: str | None = option("level", f"Daemon log level: {', '.join(LOG_LEVELS)} [info].", "LEVEL")
    log_file: str | None = option("path", "Daemon log file (rotated at 10 MiB, 3 kept); else stderr.", "FILE")
    metrics_file: str | None = option("path", "Prometheus text file the daemon rewrites every 10 s.", "FILE")
    metrics_port: int | None = option("port", "Serve Prometheus metrics on 127.0.0.1:PORT.", "PORT")
    timeout: float | None = option(
        "seconds", "Seconds before an uncached read fails with EIO when the store does not answer [30].",
        "SECONDS")
    allow_other: bool = option("flag", "Let other users read (adds default_permissions).")
    write: bool = option("flag", "Writable: changes go to a local overlay; 'fsmount commit' makes them a "
                         "version.", flags=("--write", "-w"))
    fuse_options: list[str] = option(  # noqa: RUF009 (a field() with metadata)
        "list", "FUSE mount options.", "OPT[,OPT]", key="options", flags=("-o",))
    warm: list[str] = option(  # noqa: RUF009 (a field() with metadata)
        "list", "Warm the cache with these paths of the version in the background ('/' for all; repeat or "
        "comma separate); progress in 'fsmount status'.", "PATH[,PATH]")
    service: bool = False  # from a conf file or fstab: configuration errors exit with EX_CONFIG

    @property
    def warm_paths(self) -> list[str]:
        """The paths `--warm` names (each value may hold several, comma separated)."""
        return [p.strip() for item in self.warm for p in item.split(",") if p.strip()]

    @property
    def read_timeout(self) -> float:
        return DEFAULT_TIMEOUT if self.timeout is None else self.timeout

    @classmethod
    def from_cli(cls, ref: str | None, mountpoint: str | None, values: dict[str, Any]) -> MountRequest:
        """A request from click's values (text as typed; flags and -o lists as click gives them)."""
        req = cls(ref or "", mountpoint or "")
        for opt in OPTIONS:
            value = values.get(opt.name)
            if opt.kind == "list":
                value = list(value or ())
            elif isinstance(value, str):
                value = opt.parse(value, "", UsageError, opt.cli_flags[0])
            if value is not None:
                setattr(req, opt.name, value)
        return req

    def filled_from(self, other: MountRequest) -> MountRequest:
        """This request with every field it leaves unset taken from `other` (CLI over conf file)."""
        merged = dataclasses.replace(other)
        for f in dataclasses.fields(self):
            mine = getattr(self, f.name)
            if f.name == "fuse_options":
                merged.fuse_options = [*mine, *other.fuse_options]
            elif mine not in (None, False, ""):
                setattr(merged, f.name, mine)
        return merged

    def _label(self, opt: Option) -> str:
        return opt.name if self.service else opt.cli_flags[0]

    def validate(self) -> MountRequest:
        """Refuse what cannot work, each with one line (exit 2; 78 from a conf file or fstab); then
        make paths absolute and the store URL normal. Returns self."""
        error = ConfigError if self.service else UsageError
        o = {opt.name: opt for opt in OPTIONS}
        if not self.ref or not self.mountpoint:
            raise error("a mount needs a dataset and a mountpoint" if self.service
                        else "mount needs REF and MOUNTPOINT (or --config FILE)")
        if self.overlay and not self.write:
            raise error(f"{self._label(o['overlay'])} needs {self._label(o['write'])}")
        t = self.timeout
        if t is not None and (isinstance(t, bool) or not isinstance(t, int | float) or not math.isfinite(t)
                              or t <= 0):
            raise error(f"{self._label(o['timeout'])} must be a positive number of seconds, got {t!r}")
        p = self.metrics_port
        if p is not None and (isinstance(p, bool) or not isinstance(p, int) or not 0 < p < 65536):
            raise error(f"{self._label(o['metrics_port'])} must be a port number from 1 to 65535, got {p!r}")
        if self.log_level is not None:
            if str(self.log_level).lower() not in LOG_LEVELS:
                raise error(f"{self._label(o['log_level'])} must be one of {', '.join(LOG_LEVELS)}, "
                            f"got {self.log_level!r}")
            self.log_level = str(self.log_level).lower()
        try:
            if self.cache_size is not None:
                config.parse_size(self.cache_size, what=self._label(o["cache_size"]))
            if self.endpoint_url is not None:
                config.check_endpoint_url(self.endpoint_url, self._label(o["endpoint_url"]))
            if self.store is not None:
                self.store = config.normalise_store_url(self.store)
        except UsageError as e:
            raise error(str(e)) from None
        self.mountpoint = os.path.abspath(self.mountpoint)
        for opt in OPTIONS:
            if opt.kind == "path" and getattr(self, opt.name):
                setattr(self, opt.name, os.path.abspath(os.path.expanduser(getattr(self, opt.name))))
        return self

    def fuse_option_set(self) -> set[str]:
        opts = {"fsname=fsmount", "subtype=fsmount", "nosuid", "nodev"} | (set() if self.write else {"ro"})
        if self.allow_other:
            opts |= {"allow_other", "default_permissions"}
        for o in self.fuse_options:
            opts |= {p.strip() for p in o.split(",") if p.strip()}
        opts.discard("ro" if self.write else "rw")
        return opts

    def cli_args(self) -> list[str]:
        """The equivalent `fsmount mount` arguments (after the command name)."""
        args = [self.ref, self.mountpoint]
        for opt in OPTIONS:
            value = getattr(self, opt.name)
            if opt.kind == "flag":
                args += [opt.cli_flags[0]] if value else []
            elif opt.kind == "list":
                for item in value:
                    args += [opt.cli_flags[0], item]
            elif value is not None:
                args += [opt.cli_flags[0], str(value)]
        return args


OPTIONS: tuple[Option, ...] = tuple(
    dataclasses.replace(f.metadata["option"], name=f.name)
    for f in dataclasses.fields(MountRequest) if "option" in f.metadata
)


def daemon_log_level(asked: str | None, group_level: str | None) -> str:
    """The daemon's log level: the mount's own, else the group's when raised above the default
    (warning), else info: a daemon logs its mounts and unmounts."""
    group = (group_level or "warning").lower()
    return asked or ("info" if group == "warning" else group)
