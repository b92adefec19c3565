"""Follow-ups of the audit of the paths added after issue 9: URL passwords scrubbed by the log
filter too, '.' and '..' refused as project parts, a pathological search pattern refused from
Python as from the CLI."""

from __future__ import annotations

import pytest

from fsmount.api import catalog
from fsmount.api.workspace import Workspace
from fsmount.errors import UsageError
from fsmount.format import names
from fsmount.logs import scrub


@pytest.mark.parametrize("url", ["https://bob:hunter2@example.com/x?a=1", "s3://key:hunter2@bucket/k",
                                 "ftp://u:hunter2@h/"])
def test_a_password_in_a_url_is_scrubbed(url: str) -> None:
    out = scrub(f"GET {url} failed")
    assert "hunter2" not in out and "***@" in out


def test_a_url_without_user_info_is_left_as_is() -> None:
    text = "GET http://host:8080/path?x=1 and https://example.com/a:b@c"
    assert scrub("GET http://host:8080/path?x=1") == "GET http://host:8080/path?x=1"
    assert "host:8080" in scrub(text)


@pytest.mark.parametrize("project", ["..", "a/..", "./b", "a/./b", "../x"])
def test_dot_parts_are_not_project_names(project: str) -> None:
    with pytest.raises(UsageError, match=r"'\.' or '\.\.'"):
        names.check_project(project)


def test_names_with_dots_inside_stay_fine() -> None:
    assert names.check_project("a.b/..c/d..") == "a.b/..c/d.."


@pytest.mark.parametrize("pattern", ["a{99999999999}", "(" * 100_000])
def test_a_pathological_search_pattern_is_a_usage_error(file_store_url: str, pattern: str) -> None:
    with pytest.raises(UsageError, match="invalid name pattern"):
        catalog.search(Workspace(file_store_url), partial_name=pattern)
