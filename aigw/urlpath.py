"""Path checks shared by the edge and the terminal step.

A path the gateway routes must reach the backend as the same path: `.` and `..` segments
would let it climb outside the API's base URL, and empty segments (`//`) would route it past
an operation's own policies (`/api//admin` is not `/admin` to the router, but many backends
merge the slashes and serve `/admin`). `\\` counts as a separator too, as some backends
treat it so.
"""

from __future__ import annotations

from urllib.parse import unquote

DOT_SEGMENT = "Request path must not contain '.' or '..' segments"
EMPTY_SEGMENT = "Request path must not contain empty segments ('//')"


def path_problem(path: str) -> str | None:
    """Why a decoded path must be refused, or None."""
    if "\\" in path:
        path = path.replace("\\", "/")
    if "//" in path:
        return EMPTY_SEGMENT
    if "." in path and any(segment in (".", "..") for segment in path.split("/")):
        return DOT_SEGMENT
    return None


def encoded_path_problem(path: str) -> str | None:
    """The same for a percent-encoded path (`%2e%2e`, `%2f`, `%5c` included)."""
    return path_problem(unquote(path) if "%" in path else path)
