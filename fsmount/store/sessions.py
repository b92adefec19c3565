"""requests sessions with a connection pool as large as the transfer threads, for the SDKs on requests."""

from __future__ import annotations

from typing import TypeVar

import requests
import requests.adapters

S = TypeVar("S", bound=requests.Session)


def pooled(session: S, max_connections: int) -> S:
    """`session` with a pool of `max_connections` connections per host (requests keeps 10), so every
    transfer thread has a connection of its own instead of urllib3's "Connection pool is full"."""
    adapter = requests.adapters.HTTPAdapter(pool_connections=2, pool_maxsize=max_connections)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session
