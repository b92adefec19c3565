"""Tunables of a mount: timeouts, thread limits, prefetch window and budget, kernel cache timeouts."""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass


@dataclass
class FsOptions:
    """Everything a mount can tune; the defaults suit S3 and a local disk cache."""

    fetch_timeout: float = 30.0  # a demand read of an uncached block or tree fails with EIO after this
    fetch_threads: int = 32  # worker threads for demand reads (metadata and blocks)
    prefetch_threads: int = 8  # worker threads for prefetch (separate, so demand reads never wait)
    prefetch_initial: int = 4 * 2**20  # window after the second sequential read (one default block)
    prefetch_max: int = 128 * 2**20  # window cap per open file
    prefetch_budget: int = 256 * 2**20  # bytes prefetching or held in memory, for all open files together
    write_behind: int = 128 * 2**20  # fetched bytes that may wait for the disk cache (0: write inline)
    handles_per_file: int = 64  # blocks (in memory or open cache files) kept per open file
    entry_timeout: float = 86400.0  # versions are immutable: the kernel may cache names and attrs
    attr_timeout: float = 86400.0
    read_ahead_kb: int = 1024  # kernel readahead of the mount (bdi), set after INIT when allowed (root)
    max_background: int = 64  # kernel: async FUSE requests in flight, set after INIT when allowed
    # Packed small files (docs/SEMANTICS.md "Packed files"): a miss fetches the whole pack when its
    # pack had a miss before or another miss came within pack_stream_window s; else one ranged GET.
    pack_stream_window: float = 1.0
    pack_size_hint: int = 32 * 2**20  # budget reserved for a pack fetch before its size is known
    pack_wait: float = 2.0  # a read waits this long for a pack in flight (or budget), then GETs its range
    pack_threads: int = 8  # worker threads for whole-pack fetches
    # A read-only mount pushes a packed file's bytes into the kernel's page cache when it is opened
    # and they are at hand (memory or page cache, verified): the file's READ requests never come.
    prefill_max: int = 2**20  # largest file prefilled (0: never)

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


def tune_kernel(mountpoint: str, options: FsOptions) -> list[str]:
    """Best effort, after the FUSE INIT: raise the mount's readahead and async request limit.

    The kernel sends reads of at most the bdi's readahead (128 KiB by default, lowered never
    raised by INIT) and keeps at most `max_background` of them in flight (12). Both are sysfs
    knobs of this one mount that only root may write; anyone else keeps the defaults.
    Returns what was changed, for the log.
    """
    done: list[str] = []
    try:
        dev = os.stat(mountpoint).st_dev
    except OSError:
        return done
    major, minor = os.major(dev), os.minor(dev)
    knobs = [(f"/sys/class/bdi/{major}:{minor}/read_ahead_kb", options.read_ahead_kb),
             (f"/sys/fs/fuse/connections/{minor}/max_background", options.max_background),
             (f"/sys/fs/fuse/connections/{minor}/congestion_threshold", options.max_background * 3 // 4)]
    for path, value in knobs:
        if value <= 0:
            continue
        try:
            with open(path, "w") as f:
                f.write(f"{value}\n")
            done.append(f"{path}={value}")
        except OSError:
            pass
    return done
