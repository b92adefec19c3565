"""A draft's local staging journal: what was added, removed and already uploaded, replayable after a crash."""

from __future__ import annotations

import json
import logging
import os
import shutil
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from fsmount.errors import FormatError
from fsmount.format.objects import FileEntry, file_entry_from_json, file_entry_to_json
from fsmount.format.tree_edit import _glob_match, split_path

log = logging.getLogger(__name__)

SESSION = uuid.uuid4().hex  # this process: blocks it uploaded cannot have been collected meanwhile

entry_to_json = file_entry_to_json  # the journal's `entry` field: the one FileEntry codec of fsmount.format


@dataclass
class Staged:
    """The replayed journal: the change-set a draft will commit."""

    adds: dict[str, tuple[str, str]] = field(default_factory=dict)  # dest -> (kind, source path)
    removes: list[str] = field(default_factory=list)  # globs (user's `remove`), applied to the parents' tree
    deletes: list[str] = field(default_factory=list)  # exact paths (from sync), never read as globs
    # dest -> (source stamp, entry, id of the process session that uploaded it)
    uploaded: dict[str, tuple[list[int], FileEntry, str]] = field(default_factory=dict)


def source_stamp(src: str) -> list[int]:
    st = os.stat(src, follow_symlinks=False)
    return [st.st_size, st.st_mtime_ns, st.st_ino]


class StagingJournal:
    """Append-only JSON lines under data_home/drafts/<id>/journal.jsonl.

    A line is one event; a torn last line (a crash mid-write) is ignored on replay.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        self.path = folder / "journal.jsonl"

    def exists(self) -> bool:
        return self.path.exists()

    def create(self, meta: dict[str, Any]) -> None:
        self.folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        (self.folder / "draft.json").write_text(json.dumps(meta))
        self.path.touch()

    def meta(self) -> dict[str, Any]:
        try:
            return json.loads((self.folder / "draft.json").read_text())
        except FileNotFoundError:
            return {}

    def append(self, events: list[dict[str, Any]]) -> None:
        if not events:
            return
        self.folder.mkdir(parents=True, exist_ok=True)
        with open(self.path, "a", encoding="utf-8") as f:
            f.write("".join(json.dumps(e, separators=(",", ":")) + "\n" for e in events))
            f.flush()
            os.fsync(f.fileno())

    def replay(self) -> Staged:
        staged = Staged()
        if not self.path.exists():
            return staged
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                try:
                    ev = json.loads(line)
                except json.JSONDecodeError:
                    log.warning("ignoring a torn line at the end of %s", self.path)
                    break
                op = ev.get("op")
                if op == "add":
                    staged.adds[ev["path"]] = (ev["kind"], ev["src"])
                    staged.uploaded.pop(ev["path"], None)
                elif op == "delete":  # an exact path: a name like 'img[1].jpg' is not a glob here
                    path = ev["path"]
                    for dest in [d for d in staged.adds if d == path or d.startswith(path + "/")]:
                        del staged.adds[dest]
                        staged.uploaded.pop(dest, None)
                    staged.deletes.append(path)
                elif op == "remove":
                    pat = ev["pattern"]
                    for dest in [d for d in staged.adds if matches(d, pat)]:
                        del staged.adds[dest]
                        staged.uploaded.pop(dest, None)
                    staged.removes.append(pat)
                elif op == "uploaded":
                    try:
                        entry = file_entry_from_json(ev["path"].rsplit("/", 1)[-1], ev["entry"])
                    except FormatError as e:
                        raise FormatError(f"{self.path} line {lineno}: {e}") from None
                    staged.uploaded[ev["path"]] = (ev["stamp"], entry, ev.get("session", ""))
                elif op == "forget_upload":  # its blocks vanished from the store: upload again
                    staged.uploaded.pop(ev["path"], None)
        return staged

    def discard(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def matches(path: str, pattern: str) -> bool:
    pattern = "/".join(split_path(pattern))
    return path == pattern or path.startswith(pattern + "/") or _glob_match(path, pattern)
