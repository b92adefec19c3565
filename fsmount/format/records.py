"""Version records and state objects: what a version is (immutable) and where it stands (mutable).

docs/FORMAT.md §5 and §6 describe every field; a change here is a change there.
"""

from __future__ import annotations

from dataclasses import dataclass

import msgpack

from fsmount.errors import FormatError
from fsmount.format.names import is_version_id
from fsmount.format.objects import MAX_BLOCK_SIZE
from fsmount.format.strict import (
    FORMAT,
    check_hash,
    check_ids,
    check_int,
    check_tags,
    check_text,
    check_time,
    unpack,
)
from fsmount.format.tree_packs import check_tree_packs

REPACKED_STATE_FORMAT = 2  # a state naming a repacked root (docs/FORMAT.md §10, "Repacking")

STATES = ("draft", "final", "published", "aborted", "failed")
READABLE_STATES = ("final", "published")


@dataclass(slots=True)
class VersionRecord:
    """The immutable description of a finalized version."""

    id: str
    project: str
    name: str
    version: str
    parents: tuple[str, ...]
    root: bytes  # hash of the root tree: already the merged view of parents + changes
    base: bytes  # hash of the merged parents' tree (EMPTY_TREE_HASH for a root version)
    created: float
    finalized: float
    author: str
    message: str
    files: int
    nbytes: int  # stored under the key "bytes"
    block_size: int
    tree_packs: tuple[tuple[bytes, int], ...] = ()  # (hash, size): its new trees in one object each

    def encode(self) -> bytes:
        d = {
            "format": FORMAT,
            "type": "version",
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "version": self.version,
            "parents": list(self.parents),
            "root": self.root,
            "base": self.base,
            "created": self.created,
            "finalized": self.finalized,
            "author": self.author,
            "message": self.message,
            "files": self.files,
            "bytes": self.nbytes,
            "block_size": self.block_size,
        }
        if self.tree_packs:  # absent when none: records without them are as before
            d["tree_packs"] = [list(p) for p in self.tree_packs]
        return msgpack.packb(d, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes) -> VersionRecord:
        d = unpack(data, "version")
        try:
            vid = d["id"]
            if not is_version_id(vid):
                raise FormatError("malformed id in version record")
            return cls(
                id=vid,
                project=check_text(d["project"], "project"),
                name=check_text(d["name"], "name"),
                version=check_text(d["version"], "version"),
                parents=check_ids(d["parents"], vid),
                root=check_hash(d["root"]),
                base=check_hash(d["base"]),
                created=check_time(d["created"], "created"),
                finalized=check_time(d["finalized"], "finalized"),
                author=check_text(d["author"], "author"),
                message=check_text(d["message"], "message"),
                files=check_int(d["files"]),
                nbytes=check_int(d["bytes"]),
                block_size=check_int(d["block_size"], lo=1, hi=MAX_BLOCK_SIZE),
                tree_packs=check_tree_packs(d.get("tree_packs", ())),
            )
        except KeyError as e:
            raise FormatError(f"malformed version record: no field {e}") from None
        except FormatError as e:
            raise FormatError(f"malformed version record: {e}") from None


@dataclass(slots=True)
class VersionState:
    """The mutable side of a version: lifecycle state, tags, description.

    It also repeats the identity fields so that drafts (which have no record yet) can
    be listed and resolved.
    """

    id: str
    project: str
    name: str
    version: str
    parents: tuple[str, ...]
    state: str
    tags: tuple[str, ...]
    description: str
    created: float
    updated: float
    author: str
    etag: str | None = None  # the store's etag when read; not serialised
    # Set by `gc --repack` only (then the state is written as format 2, which older readers refuse):
    root: bytes | None = None  # the version's root tree now; the record's root holds the same files
    replaced: bytes | None = None  # the root this one replaced, kept reachable for a grace period
    repacked: float | None = None  # when

    def encode(self) -> bytes:
        d: dict[str, object] = {
            "format": FORMAT if self.root is None else REPACKED_STATE_FORMAT,
            "type": "state",
            "id": self.id,
            "project": self.project,
            "name": self.name,
            "version": self.version,
            "parents": list(self.parents),
            "state": self.state,
            "tags": sorted(set(self.tags)),
            "description": self.description,
            "created": self.created,
            "updated": self.updated,
            "author": self.author,
        }
        if self.root is not None:
            d["root"] = self.root
            if self.replaced is not None and self.repacked is not None:
                d["replaced"] = self.replaced
                d["repacked"] = self.repacked
        return msgpack.packb(d, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes, etag: str | None = None) -> VersionState:
        d = unpack(data, "state", REPACKED_STATE_FORMAT)
        try:
            vid = d["id"]
            if not is_version_id(vid):
                raise FormatError(f"malformed id {vid!r}")
            st = cls(
                id=vid,
                project=check_text(d["project"], "project"),
                name=check_text(d["name"], "name"),
                version=check_text(d["version"], "version"),
                parents=check_ids(d["parents"], vid),
                state=check_text(d["state"], "state"),
                tags=check_tags(d["tags"]),
                description=check_text(d["description"], "description"),
                created=check_time(d["created"], "created"),
                updated=check_time(d["updated"], "updated"),
                author=check_text(d["author"], "author"),
                etag=etag,
            )
            if d["format"] >= REPACKED_STATE_FORMAT:
                st.root = check_hash(d["root"])
                if "replaced" in d:
                    st.replaced = check_hash(d["replaced"])
                    st.repacked = check_time(d["repacked"], "repacked")
        except KeyError as e:
            raise FormatError(f"malformed state object: no field {e}") from None
        except FormatError as e:
            raise FormatError(f"malformed state object: {e}") from None
        if st.state not in STATES:
            raise FormatError(f"malformed state object for {vid!r}: unknown state {st.state!r}")
        return st


# -- dataset aliases and metadata attachments (FORMAT.md §13, §14) ----------------------------------


def _check_name_list(v: object, what: str) -> tuple[str, ...]:
    if not isinstance(v, tuple | list) or not all(type(t) is str for t in v):
        raise FormatError(f"malformed {what}: not an array of str")
    return tuple(v)


@dataclass(slots=True)
class DatasetAlias:
    """Where the dataset once called `old_project`/`old_name` lives now (key `dataset-aliases/<h>`).

    Written by rename and move before any state changes; `ids` are the versions it moved, so
    a rename interrupted half-way can be run again, and a REF by the old name can name the new one.
    """

    project: str
    name: str
    ids: tuple[str, ...]
    updated: float
    etag: str | None = None

    def encode(self) -> bytes:
        d = {
            "format": FORMAT,
            "type": "alias",
            "project": self.project,
            "name": self.name,
            "ids": sorted(set(self.ids)),
            "updated": self.updated,
        }
        return msgpack.packb(d, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes, etag: str | None = None) -> DatasetAlias:
        d = unpack(data, "alias")
        try:
            ids = _check_name_list(d["ids"], "ids")
            if not all(is_version_id(i) for i in ids):
                raise FormatError("malformed ids: not version ids")
            return cls(
                project=check_text(d["project"], "project"),
                name=check_text(d["name"], "name"),
                ids=ids,
                updated=check_time(d["updated"], "updated"),
                etag=etag,
            )
        except KeyError as e:
            raise FormatError(f"malformed alias object: no field {e}") from None
        except FormatError as e:
            raise FormatError(f"malformed alias object: {e}") from None


ATTACHMENT_KINDS = ("json", "csv", "parquet", "bytes")


@dataclass(frozen=True, slots=True)
class Attachment:
    """One named metadata attachment of a version: its kind, size and the SHA-256 of its bytes."""

    name: str
    kind: str
    size: int
    sha256: bytes
    ui_visible: bool = True

    def as_dict(self) -> dict[str, object]:
        return {"name": self.name, "kind": self.kind, "size": self.size, "hash": self.sha256.hex(),
                "ui_visible": self.ui_visible}


@dataclass(slots=True)
class MetadataIndex:
    """The attachments of one version (key `metadata/<id>`): name -> Attachment, changed conditionally."""

    id: str
    attachments: dict[str, Attachment]
    updated: float
    etag: str | None = None

    def encode(self) -> bytes:
        rows = [[a.name, a.kind, a.size, a.sha256, int(a.ui_visible)]
                for a in sorted(self.attachments.values(), key=lambda a: a.name.encode())]
        d = {"format": FORMAT, "type": "metadata", "id": self.id, "attachments": rows,
             "updated": self.updated}
        return msgpack.packb(d, use_bin_type=True)

    @classmethod
    def decode(cls, data: bytes, etag: str | None = None) -> MetadataIndex:
        d = unpack(data, "metadata")
        try:
            vid = d["id"]
            if not is_version_id(vid):
                raise FormatError(f"malformed id {vid!r}")
            rows = d["attachments"]
            if not isinstance(rows, tuple | list):
                raise FormatError("attachments is not an array")
            out: dict[str, Attachment] = {}
            for row in rows:
                if not isinstance(row, tuple | list) or len(row) != 5:
                    raise FormatError("an attachment is not a 5-element array")
                name, kind = check_text(row[0], "name"), check_text(row[1], "kind")
                if kind not in ATTACHMENT_KINDS:
                    raise FormatError(f"unknown attachment kind {kind!r}")
                out[name] = Attachment(name, kind, check_int(row[2]), check_hash(row[3]),
                                       bool(check_int(row[4], hi=1)))
            return cls(id=vid, attachments=out, updated=check_time(d["updated"], "updated"), etag=etag)
        except KeyError as e:
            raise FormatError(f"malformed metadata object: no field {e}") from None
        except FormatError as e:
            raise FormatError(f"malformed metadata object: {e}") from None
