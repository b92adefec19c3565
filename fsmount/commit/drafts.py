"""Making drafts: version numbers (unique per dataset, reserved in the store), author, a draft's
state and staging journal, the current-draft pointer, and which drafts are stale."""

from __future__ import annotations

import fcntl
import getpass
import hashlib
import json
import logging
import os
import random
import threading
import time
from collections.abc import Iterable
from pathlib import Path

from fsmount.commit import registry
from fsmount.commit.locks import STALE_AFTER, writer_drafts
from fsmount.commit.staging import StagingJournal
from fsmount.errors import ConflictError, FsmountError, NotFoundError, PreconditionFailed, UsageError
from fsmount.format import names
from fsmount.format.hashing import new_version_id
from fsmount.format.records import VersionState
from fsmount.store.base import ObjectStore

log = logging.getLogger(__name__)

MIN_BLOCK_SIZE = 4096
MAX_BLOCK_SIZE = 2**30
MAX_BUMPS = 1000  # an automatic version tries at most this many numbers before giving up
NAMES_PREFIX = "version-names/"


def next_version(prev: VersionState | None) -> str:
    """1.0.0 for a new dataset; otherwise bump the last numeric part of the newest version."""
    return "1.0.0" if prev is None else bump(prev.version)


def bump(version: str) -> str:
    """The version after `version`: its last numeric part plus one, else `version` + '.1'."""
    parts = version.split(".")
    if parts and names.is_ascii_digits(parts[-1]):
        parts[-1] = str(int(parts[-1]) + 1)
        return ".".join(parts)
    return version + ".1"


# -- version reservations: `version-names/<sha256 hex of project NUL name NUL version>` -> version id --


def name_key(project: str, name: str, version: str) -> str:
    """The key reserving `version` for dataset `project`/`name`."""
    h = hashlib.sha256("\0".join((project, name, version)).encode("utf-8", "surrogateescape")).hexdigest()
    return NAMES_PREFIX + h


def reserve_version(store: ObjectStore, project: str, name: str, version: str, version_id: str) -> str | None:
    """Reserve `version` for `version_id` (create-if-absent); None if done, else the id holding it.

    A reservation whose holder was aborted, or has no state although the reservation is older
    than STALE_AFTER (a crash between reserving and creating the state), is taken over with an
    update-if-unchanged.
    """
    key = name_key(project, name, version)
    for attempt in range(8):
        if attempt:
            time.sleep(min(1.0, 0.02 * 2**attempt) * random.uniform(0.5, 1.5))
        try:
            store.put_conditional(key, version_id.encode(), if_match=None)
            return None
        except PreconditionFailed:
            pass
        try:
            data, etag = store.get_versioned(key)
        except NotFoundError:
            continue  # released meanwhile, or another create is in flight (S3's 409): try again
        holder = data.decode("ascii", "replace").strip()
        if holder == version_id:
            return None
        if not _abandoned(store, key, holder):
            return holder
        try:
            store.put_conditional(key, version_id.encode(), if_match=etag)
            log.info("took over the reservation of %s/%s@%s from %s", project, name, version, holder)
            return None
        except (PreconditionFailed, NotFoundError):
            continue
    return "another process"


def _abandoned(store: ObjectStore, key: str, holder: str) -> bool:
    try:
        return registry.read_state(store, holder).state == "aborted"
    except NotFoundError:
        info = store.head(key)
        return info is not None and time.time() - info.mtime > STALE_AFTER
    except FsmountError:
        return False  # an undecodable state: keep the reservation


def release_version(store: ObjectStore, st: VersionState) -> None:
    """Drop the reservation of `st`'s version string, only if it still names `st`."""
    key = name_key(st.project, st.name, st.version)
    try:
        data, _ = store.get_versioned(key)
    except NotFoundError:
        return
    if data.decode("ascii", "replace").strip() == st.id:
        store.delete(key)


def _taken(states: list[VersionState], project: str, name: str, version: str) -> VersionState | None:
    """A version already listed with this version string (stores from before reservations)."""
    for s in states:
        if (s.project, s.name, s.version) == (project, name, version) and s.state != "aborted":
            return s
    return None


# -- stale drafts ---------------------------------------------------------------------------


def stale_drafts(store: ObjectStore, states: Iterable[VersionState]) -> dict[str, float]:
    """Drafts whose writer is gone: id -> when it last showed life (its state's `updated`).

    A draft is stale when no fresh writer lock names it and its state was not updated for
    STALE_AFTER seconds (upload and close touch it when they start and end).
    """
    drafts = [s for s in states if s.state == "draft"]
    if not drafts:
        return {}
    now = time.time()
    old = [s for s in drafts if now - (s.updated or s.created) > STALE_AFTER]
    if not old:
        return {}
    live = writer_drafts(store)
    return {s.id: (s.updated or s.created) for s in old if s.id not in live}


def touch(store: ObjectStore, draft_id: str) -> None:
    """Mark a draft live now (its state's `updated`); nothing if it is no longer a draft."""

    class _NotDraft(Exception):
        pass

    def change(st: VersionState) -> None:
        if st.state != "draft":
            raise _NotDraft

    try:
        registry.update_state(store, draft_id, change)
    except _NotDraft:
        pass
    except FsmountError as e:
        log.warning("could not mark draft %s as live: %s", draft_id, e)


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
        meta: dict[str, int] | None = None,
    ) -> VersionState:
        """Create a draft's state in `store`; with a block size, also its staging journal.

        `parents` are version ids. Without `version`, the next after the dataset's newest
        (`states`, when given, saves listing the store again). The staging journal and the
        current-draft pointer are for drafts filled by add/sync; an overlay commit stages in
        its upper layer and passes no block size. `meta`: more settings for draft.json (packing).
        """
        check_names(project, name)
        parents = tuple(parents)
        if block_size is not None:
            check_block_size(block_size)
        if len(set(parents)) != len(parents):
            raise UsageError("the same parent is given twice")
        if states is None:
            states = registry.list_states(store)
        vid = new_version_id()
        version = self._reserve(store, project, name, version, vid, states)
        now = time.time()
        st = VersionState(
            id=vid,
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
        try:
            registry.create_state(store, st)
        except BaseException:
            release_version(store, st)
            raise
        if block_size is not None:
            self.journal(st.id).create(
                {"id": st.id, "store": self.store_url, "block_size": block_size, **(meta or {})})
            self.set_current(st.id)
        return st

    @staticmethod
    def _reserve(
        store: ObjectStore, project: str, name: str, version: str | None, vid: str, states: list[VersionState]
    ) -> str:
        """Reserve the given version string (refused if taken), or the first free one after the newest."""
        if version is not None:
            old = _taken(states, project, name, version)
            holder = old.id if old is not None else reserve_version(store, project, name, version, vid)
            if holder is not None:
                raise ConflictError(
                    f"version {version!r} of {project}/{name} is taken (by {holder}); choose another"
                )
            return version
        same = (s for s in states if s.project == project and s.name == name)
        candidate = next_version(registry.newest(same))
        for _ in range(MAX_BUMPS):
            if _taken(states, project, name, candidate) is None and \
                    reserve_version(store, project, name, candidate, vid) is None:
                return candidate
            candidate = bump(candidate)
        raise ConflictError(f"no free version of {project}/{name} after {MAX_BUMPS} tries; give --version")

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
        """Read, change and replace the pointer file under an flock of its own: two processes creating
        drafts at once (concurrent children of one parent) shared one temporary name, and the
        second rename failed with FileNotFoundError (and a store's pointer could be lost)."""
        path = self._pointer_file
        path.parent.mkdir(parents=True, exist_ok=True)
        flags = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW
        lock_fd = os.open(path.with_suffix(".lock"), flags, 0o600)
        try:
            fcntl.flock(lock_fd, fcntl.LOCK_EX)
            ids = self._read_pointers()
            if draft_id is None:
                ids.pop(self.store_url, None)
            else:
                ids[self.store_url] = draft_id
            tmp = path.with_name(f".{path.name}.{os.getpid()}.{threading.get_ident()}.tmp")
            tmp.write_text(json.dumps(ids))
            tmp.replace(path)
        finally:
            os.close(lock_fd)
