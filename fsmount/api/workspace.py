"""Where a command works: which store, which cache, and the local state folder; opened lazily."""

from __future__ import annotations

import os
from functools import cached_property
from pathlib import Path

from fsmount import config
from fsmount.cache.fetcher import ObjectReader
from fsmount.cache.local_cache import ContentCache
from fsmount.config import data_home, private_dir
from fsmount.errors import UsageError
from fsmount.store import open_store
from fsmount.store.base import ObjectStore

__all__ = ["Workspace", "data_home"]  # data_home: kept here for modules that still import it from the API


def _identity(store: ObjectStore) -> str:
    """An open store's URL in normal form (a store of another kind keeps the URL it gives)."""
    try:
        return config.normalise_store_url(store.url)
    except UsageError:
        return store.url


class Workspace:
    """The store, cache and object reader one command (or one mount) works with.

    `store_url` is the store's identity: the normalised URL (config.normalise_store_url), so
    `--store /p` and `--store file:///p/` are one store, with one current draft.
    """

    def __init__(
        self,
        store: str | ObjectStore | None = None,
        *,
        endpoint_url: str | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        cache_size: str | int | None = None,
        cache: ContentCache | None = None,
    ) -> None:
        if isinstance(store, ObjectStore):
            self._store: ObjectStore | None = store
            self.store_url = _identity(store)
        else:
            self._store = None
            self.store_url = config.store_url(store)
        self.endpoint_url = endpoint_url
        self.cache_dir = cache_dir
        self.cache_size = cache_size
        if cache is not None:  # opened already (the mount daemon opens it while boto3 loads)
            self.__dict__["cache"] = cache

    @cached_property
    def store(self) -> ObjectStore:
        if self._store is None:
            self._store = open_store(self.store_url, endpoint_url=self.endpoint_url)
        return self._store

    @cached_property
    def cache(self) -> ContentCache:
        return ContentCache(self.cache_dir, self.cache_size)

    @cached_property
    def reader(self) -> ObjectReader:
        return ObjectReader(self.store, self.cache)

    @property
    def data_home(self) -> Path:
        """Drafts, overlays and the current-draft pointer: private to their owner (0700)."""
        return private_dir(data_home())

    def close(self) -> None:
        if "cache" in self.__dict__:
            self.cache.close()
        if self._store is not None:
            self._store.close()
