"""What a Dataset is before any method: its workspace, state (identity, tags, lifecycle) and record."""

from __future__ import annotations

from typing import Self

from fsmount.api.workspace import Workspace
from fsmount.commit import registry
from fsmount.commit.drafts import stale_drafts
from fsmount.errors import StateError
from fsmount.format.records import READABLE_STATES, VersionRecord, VersionState


class VersionView:
    """A version's identity and state as read from the store (Dataset adds the methods)."""

    def __init__(
        self, workspace: Workspace, state: VersionState, *, stale: float | bool | None = False
    ) -> None:
        self.workspace = workspace
        self._state = state
        self._record: VersionRecord | None = None
        self._stale = stale  # False: not looked up yet; None: not stale; else since when

    # -- identity ----------------------------------------------------------------

    @property
    def id(self) -> str:
        return self._state.id

    @property
    def name(self) -> str:
        return self._state.name

    @property
    def project(self) -> str:
        return self._state.project

    @property
    def version(self) -> str:
        return self._state.version

    @property
    def parents(self) -> list[str]:
        return list(self._state.parents)

    @property
    def tags(self) -> list[str]:
        return list(self._state.tags)

    @property
    def state(self) -> str:
        return self._state.state

    @property
    def description(self) -> str:
        return self._state.description

    @property
    def stale_since(self) -> float | None:
        """For a draft whose writer is gone (drafts.stale_drafts): when it last showed life; else None."""
        if self._stale is False:
            self._stale = stale_drafts(self.workspace.store, [self._state]).get(self.id)
        return self._stale if isinstance(self._stale, float) else None

    @property
    def stale(self) -> bool:
        return self.stale_since is not None

    @property
    def is_final(self) -> bool:
        return self._state.state in READABLE_STATES

    def __repr__(self) -> str:
        return f"<Dataset {self.project}/{self.name}@{self.version} {self.id} {self.state}>"

    def refresh(self) -> Self:
        self._state = registry.read_state(self.workspace.store, self.id)
        self._stale = False
        return self

    @property
    def record(self) -> VersionRecord:
        if self._record is None:
            if not self.is_final:
                raise StateError(f"dataset version {self.id} is {self.state}: it has no content yet")
            self._record = registry.readable_record(self.workspace.reader, self._state)
        return self._record
