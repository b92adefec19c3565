"""Making drafts: version numbers, author, a draft's state and staging journal, the current-draft pointer."""

from __future__ import annotations

import getpass
import json
import time
from collections.abc import Iterable
from pathlib import Path

from fsmount.commit import registry
from fsmount.commit.staging import StagingJournal
from fsmount.errors import UsageError
from fsmount.format import names
from fsmount.format.hashing import new_version_id
from fsmount.format.objects import VersionState
from fsmount.store.base import ObjectStore

MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 2**30


def next_version(prev: VersionState | None) -> str:
    """1.0.0 for a new dataset; otherwise bump the last numeric part of the newest version."""
    if prev is None:
        return "1.0.0"
    parts = prev.version.split(".")
    if parts and names.is_ascii_digits(parts[-1]):
        parts[-1] = str(int(parts[-1]) + 1)
        return ".".join(parts)
    return prev.version + ".1"


def author() -> str:
    """Who makes a version: the login name, or 'unknown' where there is none."""
    try:
        return getpass.getuser()
    except Exception:
        return "unknown"


def check_names(project: str, name: str) -> None:
    """Refuse a project or name outside FORMAT.md §7 (one a REF could not name again)."""
    names.check_project(project)
    names.check_name(name)


def check_block_size(block_size: int) -> None:
    if block_size < MIN_BLOCK_SIZE or block_size > MAX_BLOCK_SIZE:
        raise UsageError("block size must be between 4 KiB and 1 GiB")


class Drafts:
    """The drafts of one store (by URL) as this machine sees them: `data_home/drafts/<id>/`, the pointer.

    `current_drafts.json` maps a store URL to the draft that add/remove/close act on by default;
    it names a draft only while that draft is open.
    """

    def __init__(self, data_home: Path, store_url: str) -> None:
        self.data_home = data_home
        self.store_url = store_url

    # -- creation ------------------------------------------------------------------

    def create(
        self,
        store: ObjectStore,
        project: str,
        name: str,
        parents: Iterable[str],
        *,
        version: str | None = None,
        tags: Iterable[str] = (),
        description: str = "",
        block_size: int | None = None,
        states: list[VersionState] | None = None,
    ) -> VersionState:
        """Create a draft's state in `store`; with a block size, also its staging journal.

        `parents` are version ids. Without `version`, the next after the dataset's newest
        (`states`, when given, saves listing the store again). The staging journal and the
        current-draft pointer are for drafts filled by add/sync; an overlay commit stages in
        its upper layer and passes no block size.
        """
        check_names(project, name)
        parents = tuple(parents)
        if block_size is not None:
            check_block_size(block_size)
        if len(set(parents)) != len(parents):
            raise UsageError("the same parent is given twice")
        if version is None:
            if states is None:
                states = registry.list_states(store)
            version = next_version(
                registry.newest(s for s in states if s.project == project and s.name == name)
            )
        now = time.time()
        st = VersionState(
            id=new_version_id(),
            project=project,
            name=name,
            version=version,
            parents=parents,
            state="draft",
            tags=tuple(tags),
            description=description,
            created=now,
            updated=now,
            author=author(),
        )
        registry.create_state(store, st)
        if block_size is not None:
            self.journal(st.id).create({"id": st.id, "store": self.store_url, "block_size": block_size})
            self.set_current(st.id)
        return st

    def journal(self, draft_id: str) -> StagingJournal:
        return StagingJournal(self.data_home / "drafts" / draft_id)

    def closed(self, draft_id: str) -> None:
        """A draft was finalized, aborted or deleted: drop its journal, and the pointer if it names it."""
        self.journal(draft_id).discard()
        if self.current() == draft_id:
            self._write_pointer(None)

    # -- the current-draft pointer --------------------------------------------------------

    @property
    def _pointer_file(self) -> Path:
        return self.data_home / "current_drafts.json"

    def _read_pointers(self) -> dict[str, str]:
        try:
            ids = json.loads(self._pointer_file.read_text())
        except (FileNotFoundError, json.JSONDecodeError):
            return {}
        return ids if isinstance(ids, dict) else {}

    def current(self) -> str | None:
        """The id of this store's current draft, or None."""
        return self._read_pointers().get(self.store_url) or None

    def set_current(self, draft_id: str) -> None:
        self._write_pointer(draft_id)

    def _write_pointer(self, draft_id: str | None) -> None:
        ids = self._read_pointers()
        if draft_id is None:
            ids.pop(self.store_url, None)
        else:
            ids[self.store_url] = draft_id
        path = self._pointer_file
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(ids))
        tmp.replace(path)
