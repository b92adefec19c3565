"""Tunables of a mount: timeouts, thread limits, prefetch window and budget, kernel cache timeouts."""

from __future__ import annotations

from dataclasses import asdict, dataclass


@dataclass
class FsOptions:
    """Everything a mount can tune; the defaults suit S3 and a local disk cache."""

    fetch_timeout: float = 30.0  # a demand read of an uncached block or tree fails with EIO after this
    fetch_threads: int = 32  # worker threads for demand reads (metadata and blocks)
    prefetch_threads: int = 16  # worker threads for prefetch (separate, so demand reads never wait)
    prefetch_initial: int = 1 * 2**20  # window after the second sequential read
    prefetch_max: int = 64 * 2**20  # window cap per open file
    prefetch_budget: int = 256 * 2**20  # bytes of prefetch in flight, for all open files together
    handles_per_file: int = 16  # cached-block file handles kept per open file
    entry_timeout: float = 86400.0  # versions are immutable: the kernel may cache names and attrs
    attr_timeout: float = 86400.0
    readdir_batch: int = 64  # entries prepared per readdir call

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)
