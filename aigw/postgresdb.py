"""What every PostgreSQL store of aigw shares (subscriptions, the usage ledger): the connect
timeout, which errors mean the server is unavailable rather than a query being wrong, the
allowed schema names, and how a server is named in messages without its password.
"""

from __future__ import annotations

import re
from urllib.parse import parse_qs, unquote, urlsplit

import asyncpg

CONNECT_TIMEOUT_SECONDS = 5.0
# Lower case only: the name goes both into search_path, which folds case, and into DDL.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")

# Errors that mean the server is gone, overloaded, refusing us or shutting down, as opposed
# to a bug in a query.
UNAVAILABLE: tuple[type[BaseException], ...] = (
    OSError,
    TimeoutError,
    asyncpg.PostgresConnectionError,
    asyncpg.InterfaceError,
    asyncpg.InsufficientResourcesError,
    asyncpg.OperatorInterventionError,
    asyncpg.InvalidAuthorizationSpecificationError,
    asyncpg.InvalidCatalogNameError,
    asyncpg.ReadOnlySQLTransactionError,
)


def location(url: str) -> tuple[str, list[str]]:
    """`host:port/database` to name the server in messages, and the passwords to keep out."""
    parts = urlsplit(url)
    try:
        port: object = parts.port or 5432
    except ValueError:
        port = "?"
    database = parts.path.lstrip("/") or "(default database)"
    passwords = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    secrets = {text for password in passwords for text in (password, unquote(password)) if text}
    return f"{parts.hostname or 'localhost'}:{port}/{database}", sorted(secrets, key=len)[::-1]
