"""Objects a verify found damaged, remembered on this machine so that the next upload writes them again."""

from __future__ import annotations

import json
import os
from collections.abc import Iterable
from pathlib import Path


class Suspects:
    """`data_home/suspect_objects.json`: store URL -> hex hashes of objects verify found missing or corrupt.

    Dedup trusts that an object in the store is the one meant; these are the exceptions. The
    uploader writes a suspect object again (replacing the stored one) and the hash is dropped.
    """

    def __init__(self, data_home: Path, store_url: str) -> None:
        self.path = data_home / "suspect_objects.json"
        self.store_url = store_url

    def _read_all(self) -> dict[str, list[str]]:
        try:
            data = json.loads(self.path.read_text())
        except (FileNotFoundError, ValueError):
            return {}
        return data if isinstance(data, dict) else {}

    def load(self) -> set[bytes]:
        out: set[bytes] = set()
        for h in self._read_all().get(self.store_url, []):
            try:
                out.add(bytes.fromhex(h))
            except (TypeError, ValueError):
                continue
        return out

    def save(self, hashes: Iterable[bytes]) -> None:
        data = self._read_all()
        hexes = sorted(h.hex() for h in hashes)
        if hexes:
            data[self.store_url] = hexes
        else:
            data.pop(self.store_url, None)
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        tmp = self.path.with_suffix(f".tmp{os.getpid()}")
        tmp.write_text(json.dumps(data))
        tmp.replace(self.path)

    def update(self, add: Iterable[bytes] = (), remove: Iterable[bytes] = ()) -> None:
        current = self.load()
        new = (current | set(add)) - set(remove)
        if new != current:
            self.save(new)
