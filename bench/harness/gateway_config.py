"""Temp copies of bench/configs/*.yaml pointed at this run's nginx backend and ports."""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import yaml

from harness.processes import LOOPBACK


def rebase_url(url: str, backend_url: str) -> str:
    """Keep the path of `url`, take scheme/host/port from `backend_url`; a path of
    `backend_url` goes in front (the backend's `/slow` members)."""
    old, new = urlsplit(url), urlsplit(backend_url)
    path = new.path.rstrip("/") + old.path
    return urlunsplit((new.scheme, new.netloc, path, old.query, old.fragment))


def _is_loopback_http(value: Any) -> bool:
    # Only HTTP: a loopback `redis://` counter store (aigw-token-limit) stays where it is.
    if not isinstance(value, str):
        return False
    parts = urlsplit(value)
    return parts.scheme in ("http", "https") and parts.hostname in (LOOPBACK, "localhost")


def _rewrite(node: Any, backend_url: str, depth: int = 0) -> Any:
    """Rebase every loopback HTTP `url:` anywhere in the tree, so schema tweaks need no code."""
    if depth > 50:
        raise ValueError("config nested too deep")
    if isinstance(node, dict):
        out: dict[Any, Any] = {}
        for key, value in node.items():
            if key == "url" and _is_loopback_http(value):
                out[key] = rebase_url(value, backend_url)
            else:
                out[key] = _rewrite(value, backend_url, depth + 1)
        return out
    if isinstance(node, list):
        return [_rewrite(item, backend_url, depth + 1) for item in node]
    return node


def write_gateway_config(
    source: Path, target: Path, backend_url: str, port: int, admin_port: int
) -> bool:
    """Write the copy; True when the config has an `admin` section, which then listens on
    `admin_port` (its token is the config's business: see harness.admin)."""
    data = yaml.safe_load(source.read_text())
    if not isinstance(data, dict):
        raise ValueError(f"{source}: expected a mapping at the top level")
    data = _rewrite(data, backend_url)
    gateway = data.setdefault("gateway", {})
    gateway["host"] = LOOPBACK
    gateway["port"] = port
    admin = data.get("admin")
    if isinstance(admin, dict):
        admin["host"] = LOOPBACK
        admin["port"] = admin_port
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(yaml.safe_dump(data, sort_keys=False, allow_unicode=True))
    return isinstance(admin, dict)
