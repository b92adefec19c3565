"""The grammar of docs/FORMAT.md §7: projects, dataset names, tags, version strings and REFs."""

from __future__ import annotations

import enum
import re
from dataclasses import dataclass

from fsmount.errors import UsageError

MAX_NAME_BYTES = 255  # project, dataset name, tag: UTF-8 bytes
MAX_VERSION_CHARS = 64
MIN_PREFIX, ID_LEN = 4, 32

_ID = re.compile(r"[0-9a-f]{32}")
_PREFIX = re.compile(r"[0-9a-f]{4,31}")
# C0, DEL and C1: "printable" in §7 means none of these.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")


def is_version_id(text: object) -> bool:
    """32 lowercase hex digits, nothing before or after (no trailing newline either)."""
    return isinstance(text, str) and _ID.fullmatch(text) is not None


def is_ascii_digits(part: str) -> bool:
    """A version-string part that counts as a number: ASCII digits only (`int("²")` would raise)."""
    return part.isascii() and part.isdigit()


def _utf8_len(text: str) -> int | None:
    try:
        return len(text.encode("utf-8"))
    except UnicodeEncodeError:  # a lone surrogate (an argv byte that was not UTF-8)
        return None


def _problem(text: str, max_bytes: int) -> str | None:
    """What makes `text` no printable, non-empty, length-limited, unpadded §7 string, or None."""
    if not text:
        return "it is empty"
    if _CONTROL.search(text):
        return "it contains a control character"
    size = _utf8_len(text)
    if size is None:
        return "it is not valid UTF-8"
    if size > max_bytes:
        return f"it is longer than {max_bytes} UTF-8 bytes"
    if text[0].isspace() or text[-1].isspace():
        return "it starts or ends with whitespace"
    return None


def _refuse(label: str, value: object, why: str) -> UsageError:
    return UsageError(f"invalid {label} {value!r}: {why}")


def _check_text(label: str, value: object) -> str:
    if not isinstance(value, str):
        raise _refuse(label, value, "it is not text")
    return value


def check_name(name: object) -> str:
    """A dataset name: printable, 1-255 UTF-8 bytes, unpadded, no `/` or `@`, not `tag:...`."""
    name = _check_text("dataset name", name)
    why = _problem(name, MAX_NAME_BYTES)
    if why is None and ("/" in name or "@" in name):
        why = "it may not contain '/' or '@'"
    if why is None and name.startswith("tag:"):
        why = "it may not start with 'tag:'"
    if why:
        raise _refuse("dataset name", name, why)
    return name


def check_project(project: object) -> str:
    """A project: `/`-separated non-empty parts; printable, 1-255 bytes, unpadded, no `@`, not `tag:...`."""
    project = _check_text("project", project)
    why = _problem(project, MAX_NAME_BYTES)
    if why is None and "" in project.split("/"):
        why = "it has an empty part (a leading, trailing or double '/')"
    if why is None and {".", ".."} & set(project.split("/")):
        why = "a part may not be '.' or '..'"
    if why is None and "@" in project:
        why = "it may not contain '@'"
    if why is None and project.startswith("tag:"):
        why = "it may not start with 'tag:'"
    if why:
        raise _refuse("project", project, why)
    return project


def _check_label(what: str, value: object) -> str:
    """Printable, 1-255 UTF-8 bytes, no whitespace at its start or end."""
    text = _check_text(what, value)
    why = _problem(text, MAX_NAME_BYTES)
    if why:
        raise _refuse(what, text, why)
    return text


def check_tag(tag: object) -> str:
    """A tag: printable, 1-255 UTF-8 bytes, no whitespace at its start or end."""
    return _check_label("tag", tag)


def check_metadata_name(name: object) -> str:
    """A metadata attachment's name: the rules of a tag (printable, 1-255 UTF-8 bytes, unpadded)."""
    return _check_label("metadata name", name)


def check_version(version: object) -> str:
    """A version string: printable, 1-64 characters, no whitespace anywhere."""
    version = _check_text("version", version)
    why = _problem(version, 4 * MAX_VERSION_CHARS)
    if why is None and len(version) > MAX_VERSION_CHARS:
        why = f"it is longer than {MAX_VERSION_CHARS} characters"
    if why is None and any(c.isspace() for c in version):
        why = "it contains whitespace"
    if why:
        raise _refuse("version", version, why)
    return version


def check_identity(project: object, name: object, version: object, tags: object = ()) -> None:
    """Everything §7 asks of a version about to be written (create, the commit of a mount)."""
    check_project(project)
    check_name(name)
    check_version(version)
    if isinstance(tags, str | bytes):
        raise UsageError(f"invalid tags {tags!r}: expected a list of tags")
    for tag in tags:  # type: ignore[attr-defined]
        check_tag(tag)


class RefKind(enum.Enum):
    ID = "id"  # 32 lowercase hex digits
    PREFIX = "prefix"  # 4 ... 31 lowercase hex digits
    TAG = "tag"  # tag:TAG
    DATASET = "dataset"  # PROJECT/NAME
    VERSION = "version"  # PROJECT/NAME@VERSION


@dataclass(frozen=True, slots=True)
class Ref:
    """A parsed REF: `text` is the id, prefix or tag; project/name/version for the dataset forms."""

    kind: RefKind
    text: str = ""
    project: str = ""
    name: str = ""
    version: str = ""


def parse_ref(ref: object) -> Ref:
    """A REF (FORMAT.md §7) as given, never trimmed; anything that fits no form is a UsageError."""
    ref = _check_text("dataset reference", ref)
    if not ref:
        raise UsageError("invalid dataset reference '': it is empty")
    if _CONTROL.search(ref) or ref[0].isspace() or ref[-1].isspace():
        raise UsageError(f"invalid dataset reference {ref!r}: control character or surrounding whitespace")
    if _ID.fullmatch(ref):
        return Ref(RefKind.ID, ref)
    try:
        return _parse_named(ref)
    except UsageError as e:
        raise UsageError(f"invalid dataset reference {ref!r}: {e}") from None


def _parse_named(ref: str) -> Ref:
    if ref.startswith("tag:"):
        return Ref(RefKind.TAG, check_tag(ref[4:]))
    path, at, version = ref.partition("@")
    if "/" in path:
        project, _, name = path.rpartition("/")
        check_project(project)
        check_name(name)
        if at:
            return Ref(RefKind.VERSION, project=project, name=name, version=check_version(version))
        return Ref(RefKind.DATASET, project=project, name=name)
    if _PREFIX.fullmatch(ref):
        return Ref(RefKind.PREFIX, ref)
    raise UsageError(
        "use an id, a lowercase id prefix (4+ hex digits), PROJECT/NAME, PROJECT/NAME@VERSION or tag:TAG"
    )
