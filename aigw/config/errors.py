"""Config problems are collected, each with the path of the offending value, reported at once."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class ConfigIssue:
    path: str
    message: str

    def __str__(self) -> str:
        return f"{self.path}: {self.message}" if self.path else self.message


class ConfigError(Exception):
    def __init__(self, issues: list[ConfigIssue]) -> None:
        self.issues = issues
        super().__init__("\n".join(str(issue) for issue in issues))


def format_loc(loc: Sequence[int | str]) -> str:
    """A pydantic error location as a config path suffix: `.limits.max-body-size`, `[2]`."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else f".{part}"
    return out


class IssueCollector:
    def __init__(self) -> None:
        self.issues: list[ConfigIssue] = []

    def add(self, path: str, message: str) -> None:
        self.issues.append(ConfigIssue(path, message))

    def raise_if_any(self, secrets: Iterable[str] = ()) -> None:
        """Raise all issues; messages can quote config text, so secret values are masked."""
        if self.issues:
            hidden = sorted((s for s in secrets if s), key=len, reverse=True)
            raise ConfigError([ConfigIssue(i.path, _mask(i.message, hidden)) for i in self.issues])


def _mask(text: str, secrets: list[str]) -> str:
    for secret in secrets:
        text = text.replace(secret, "***")
    return text
