"""Logging setup: JSON lines, secrets redacted, and no tracebacks for deliberate stream aborts."""

from __future__ import annotations

import asyncio
import json
import logging
import sys
from collections.abc import Iterable
from datetime import UTC, datetime

from aigw.errors import StreamAborted

_STANDARD = set(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}


class JsonFormatter(logging.Formatter):
    """One JSON object per line. Secret values are masked in the whole line (message, extra
    fields and tracebacks alike), in their raw and their JSON-escaped spelling."""

    def __init__(self, secrets: Iterable[str] = ()) -> None:
        super().__init__()
        self.secrets: list[str] = []
        self.add_secrets(secrets)

    def add_secrets(self, secrets: Iterable[str]) -> None:
        for secret in secrets:
            # Very short values would mask unrelated text and protect nothing.
            if len(secret) >= 4:
                for spelling in (secret, json.dumps(secret)[1:-1]):
                    if spelling not in self.secrets:
                        self.secrets.append(spelling)
        self.secrets.sort(key=len, reverse=True)

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _STANDARD and key != "color_message" and not key.startswith("_"):
                entry[key] = value
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return redact(json.dumps(entry, default=str), self.secrets)


def redact(text: str, secrets: Iterable[str]) -> str:
    """`text` with every secret value (longest first) replaced by ***."""
    for secret in sorted(secrets, key=len, reverse=True):
        if secret and secret in text:
            text = text.replace(secret, "***")
    return text


def set_log_secrets(secrets: Iterable[str]) -> None:
    """After a reload: mask the new config's secrets too (in-flight requests may still log
    with the old ones, so those stay masked)."""
    for handler in logging.getLogger().handlers:
        if isinstance(handler.formatter, JsonFormatter):
            handler.formatter.add_secrets(secrets)


class DropStreamAborts(logging.Filter):
    """uvicorn logs any exception that ends an ASGI call; an aborted stream, or a request cut
    at the end of the shutdown grace period, is not a bug."""

    def filter(self, record: logging.LogRecord) -> bool:
        error = record.exc_info[1] if record.exc_info else None
        return not isinstance(error, StreamAborted | asyncio.CancelledError)


def configure_logging(secrets: Iterable[str] = (), level: int = logging.INFO) -> None:
    handler = logging.StreamHandler(sys.stderr)
    handler.setFormatter(JsonFormatter(secrets))
    handler.addFilter(DropStreamAborts())
    root = logging.getLogger()
    for existing in list(root.handlers):
        root.removeHandler(existing)
    root.addHandler(handler)
    root.setLevel(level)
    for name in ("uvicorn", "uvicorn.error", "uvicorn.access"):
        logging.getLogger(name).handlers.clear()
        logging.getLogger(name).propagate = True
    logging.getLogger("uvicorn.access").setLevel(logging.WARNING)
    # azure-core logs every identity/Key Vault request and response at INFO; the gateway
    # logs each token acquisition itself (aigw.identity).
    logging.getLogger("azure").setLevel(logging.WARNING)
