"""What a mount is asked for: one record, whether it comes from CLI options, a conf file or fstab."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field

DEFAULT_TIMEOUT = 30.0

# Fields that become `--name VALUE` options of `fsmount mount`, in this order.
_VALUE_FIELDS = ("store", "endpoint_url", "cache_dir", "cache_size", "overlay", "credentials_file",
                 "log_level", "log_file", "metrics_file", "metrics_port", "timeout")


@dataclass
class MountRequest:
    """Everything `fsmount mount` accepts. None means "not given": a default or the group's option."""

    ref: str
    mountpoint: str
    store: str | None = None
    endpoint_url: str | None = None
    cache_dir: str | None = None
    cache_size: str | None = None
    allow_other: bool = False
    write: bool = False  # writable, with an overlay (fsmount/overlay)
    overlay: str | None = None  # overlay folder; default under $XDG_DATA_HOME/fsmount/overlays
    credentials_file: str | None = None  # KEY=VALUE lines put in the environment (AWS_*)
    log_level: str | None = None
    log_file: str | None = None  # else stderr
    metrics_file: str | None = None  # Prometheus text, rewritten every 10 s
    metrics_port: int | None = None  # GET /metrics on 127.0.0.1
    timeout: float | None = None  # seconds before an uncached read fails with EIO
    fuse_options: list[str] = field(default_factory=list)
    service: bool = False  # from a conf file: configuration errors exit with EX_CONFIG

    @property
    def read_timeout(self) -> float:
        return DEFAULT_TIMEOUT if self.timeout is None else self.timeout

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

    def fuse_option_set(self) -> set[str]:
        opts = {"fsname=fsmount", "subtype=fsmount"} | (set() if self.write else {"ro"})
        if self.allow_other:
            opts |= {"allow_other", "default_permissions"}
        for o in self.fuse_options:
            opts |= {p.strip() for p in o.split(",") if p.strip()}
        opts.discard("ro" if self.write else "rw")
        return opts

    def cli_args(self) -> list[str]:
        """The equivalent `fsmount mount` arguments (after the command name)."""
        args = [self.ref, self.mountpoint]
        for name in _VALUE_FIELDS:
            value = getattr(self, name)
            if value is not None:
                args += [f"--{name.replace('_', '-')}", str(value)]
        if self.allow_other:
            args.append("--allow-other")
        if self.write:
            args.append("--write")
        for opt in self.fuse_options:
            args += ["-o", opt]
        return args
