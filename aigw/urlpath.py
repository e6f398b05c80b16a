"""Path checks shared by the edge and the terminal step."""

from __future__ import annotations

from urllib.parse import unquote


def has_dot_segment(path: str) -> bool:
    """Whether a decoded path has a `.` or `..` segment (`\\` counts as a separator too, as
    some backends treat it so)."""
    if "." not in path:
        return False
    return any(segment in (".", "..") for segment in path.replace("\\", "/").split("/"))


def encoded_has_dot_segment(path: str) -> bool:
    """The same for a percent-encoded path (`%2e%2e`, `%5c` included)."""
    return has_dot_segment(unquote(path)) if "." in path or "%" in path else False
