"""Which request paths the gateway refuses: `.`/`..` and empty segments, also encoded."""

from __future__ import annotations

import pytest

from aigw.urlpath import DOT_SEGMENT, EMPTY_SEGMENT, encoded_path_problem, path_problem


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/v1/chat/completions", None),
        ("/items/a.b/..c", None),  # dots inside a segment are names, not steps
        ("/items/", None),  # a trailing slash is not an empty segment in the middle
        ("/items/../admin", DOT_SEGMENT),
        ("/items/.", DOT_SEGMENT),
        ("/items\\..\\admin", DOT_SEGMENT),
        ("//admin", EMPTY_SEGMENT),
        ("/api//admin", EMPTY_SEGMENT),
        ("/api/\\admin", EMPTY_SEGMENT),
    ],
)
def test_path_problem(path: str, problem: str | None) -> None:
    assert path_problem(path) == problem


@pytest.mark.parametrize(
    ("path", "problem"),
    [
        ("/items/%2e%2e/admin", DOT_SEGMENT),
        ("/api/%2F/admin", EMPTY_SEGMENT),
        ("/api/%5c%5cadmin", EMPTY_SEGMENT),
        ("/items/a%2Eb", None),
    ],
)
def test_encoded_path_problem(path: str, problem: str | None) -> None:
    assert encoded_path_problem(path) == problem
