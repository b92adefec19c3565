"""The staging journal: lines written by any fsmount replay; a damaged file entry is refused, not trusted."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from fsmount.commit.staging import StagingJournal, entry_to_json
from fsmount.errors import FormatError
from fsmount.format.hashing import digest
from fsmount.format.objects import FileEntry

ORIGIN = "0123456789abcdef0123456789abcdef"
H = digest(b"x" * 10)
ENTRY = FileEntry("f.bin", 0o644, 5, 10, H, 4096, (H,), ORIGIN)
# An `uploaded` line exactly as fsmount has always written it (docs/FORMAT.md, section 11).
OLD_LINE = ('{"op":"uploaded","path":"d/f.bin","stamp":[10,5,77],"entry":{"mode":420,"mtime_ns":5,"size":10,'
            f'"sha256":"{H.hex()}","block_size":4096,"blocks":["{H.hex()}"],"origin":"{ORIGIN}"}},'
            '"session":"s1"}\n')


def test_lines_already_written_still_replay(tmp_path: Path) -> None:
    j = StagingJournal(tmp_path / "draft")
    j.create({"id": ORIGIN})
    j.path.write_text(OLD_LINE)
    j.append([{"op": "uploaded", "path": "g.bin", "stamp": [1, 2, 3], "entry": entry_to_json(ENTRY)}])
    staged = j.replay()
    assert staged.uploaded["d/f.bin"] == ([10, 5, 77], ENTRY, "s1")
    assert staged.uploaded["g.bin"][1] == FileEntry("g.bin", 0o644, 5, 10, H, 4096, (H,), ORIGIN)


@pytest.mark.parametrize("change", [{"size": 0}, {"sha256": "00"}, {"origin": "../x"}, {"mode": -1},
                                    {"blocks": [H.hex(), H.hex()]}])
def test_a_damaged_entry_is_refused_with_its_line(tmp_path: Path, change: dict[str, object]) -> None:
    j = StagingJournal(tmp_path / "draft")
    j.create({"id": ORIGIN})
    ev = json.loads(OLD_LINE)
    ev["entry"].update(change)
    j.path.write_text(OLD_LINE + json.dumps(ev) + "\n")
    with pytest.raises(FormatError, match=r"journal.jsonl line 2: "):
        j.replay()


def test_a_hostile_path_name_is_refused(tmp_path: Path) -> None:
    j = StagingJournal(tmp_path / "draft")
    j.create({"id": ORIGIN})
    j.path.write_text(OLD_LINE.replace('"d/f.bin"', '"d/.."'))
    with pytest.raises(FormatError, match="line 1"):
        j.replay()
