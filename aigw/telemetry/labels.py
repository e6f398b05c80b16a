"""Metric label names from dimension names, shared by the emit policy and the sinks."""

from __future__ import annotations

import re
from typing import Final

# Labels the emit policy adds itself; a dimension may not take these names.
RESERVED_LABELS: Final = frozenset({"namespace", "token_type", "le", "pid"})
_LABEL_CHARS: Final = re.compile(r"[^a-z0-9]+")


def label_name(dimension: str) -> str:
    """A dimension's Prometheus label: "Subscription ID" → `subscription_id`."""
    return _LABEL_CHARS.sub("_", dimension.lower()).strip("_")
