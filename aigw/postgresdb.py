"""What every PostgreSQL store of aigw shares (subscriptions, the usage ledger): the connect
timeout, which errors mean the server is unavailable rather than a query being wrong, the
allowed schema names, and how a server is named in messages without its password.

A reserved character left unencoded in a password (`/`, `?`, `#`, common in generated keys)
ends the host part of the URL early, so what looks like the host, port or database is really
a piece of the password. Such a URL is refused when the config loads, and nothing here ever
quotes one: not the parser's words, not the driver's.
"""

from __future__ import annotations

import re
from urllib.parse import SplitResult, parse_qs, unquote, urlsplit

import asyncpg

CONNECT_TIMEOUT_SECONDS = 5.0
# Lower case only: the name goes both into search_path, which folds case, and into DDL.
SCHEMA_NAME = re.compile(r"[a-z_][a-z0-9_]{0,62}")
# How messages name the server of a URL that cannot be read safely.
UNPARSEABLE = "(unparseable URL)"
_DEFAULT_PORT = 5432
_RESERVED = (
    "the URL must percent-encode reserved characters in the user name, password and database"
    " name ('/' as %2F, '?' as %3F, '#' as %23, '@' as %40)"
)

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


def url_problem(url: str) -> str | None:
    """Why the driver would misread this PostgreSQL URL, or None. The answer never quotes
    the URL: in a misread one, any piece of it may be part of the password."""
    try:
        parts = urlsplit(url)
    except ValueError:  # its text quotes the host part, which may hold the password
        return (
            "the URL cannot be parsed: an IPv6 address needs both brackets; '[', ']' and"
            " non-ASCII characters in the password must be percent-encoded"
        )
    if parts.scheme not in ("postgresql", "postgres"):
        return "the URL must start with postgresql:// or postgres://"
    # The password's '@' (or a second one) then lands after the host part. The driver also
    # splits the user part at the first '@' where urllib takes the last.
    if "#" in url or "@" in parts.path + parts.query or parts.netloc.count("@") > 1:
        return _RESERVED
    try:
        query = parse_qs(parts.query, strict_parsing=True) if parts.query else {}
    except ValueError:
        return "the query string must be name=value pairs joined by '&'"
    servers = _servers(parts)
    ports = [port for _, port in servers]
    ports += query.get("port", [""])[-1].split(",")  # the driver reads the last one given
    for port in filter(None, ports):
        if not (port.isascii() and port.isdigit()):
            return "the port is not a number"
        if not 1 <= int(port) <= 65535:
            return "the port is not between 1 and 65535"
    if any(not host for host, _ in servers):
        return "a host in the URL's list of hosts is empty"
    return None


def location(url: str) -> tuple[str, list[str]]:
    """`host:port/database` to name the server in messages, and the passwords to keep out.
    A URL with a problem (`url_problem`) is named UNPARSEABLE: its pieces may be secret."""
    if url_problem(url) is not None:
        return UNPARSEABLE, []
    parts = urlsplit(url)
    servers = ",".join(f"{host}:{port or _DEFAULT_PORT}" for host, port in _servers(parts))
    database = unquote(parts.path.lstrip("/")) or "(default database)"
    passwords = [parts.password or "", *parse_qs(parts.query).get("password", [])]
    secrets = {text for password in passwords for text in (password, unquote(password)) if text}
    return f"{servers or f'localhost:{_DEFAULT_PORT}'}/{database}", sorted(secrets, key=len)[::-1]


def failure_reason(exc: BaseException, secrets: list[str]) -> str:
    """Why connecting or a query failed, for messages, with the passwords masked."""
    if isinstance(exc, ValueError):
        # The driver refusing the URL or one of its options: its words can quote the URL.
        return "the driver refused the URL or one of its options (its message is not shown)"
    text = str(exc) or ("timed out" if isinstance(exc, TimeoutError) else type(exc).__name__)
    for secret in secrets:
        text = text.replace(secret, "***")
    return text


def _servers(parts: SplitResult) -> list[tuple[str, str]]:
    """(host, port text) of each comma-separated server, split the way the driver splits them."""
    hosts = parts.netloc.rpartition("@")[2]
    servers = []
    for spec in hosts.split(",") if hosts else []:
        if spec.startswith("["):  # an IPv6 address: [::1]:5432
            address, _, rest = spec.partition("]")
            servers.append((f"{address}]", rest.removeprefix(":")))
        else:
            host, _, port = spec.partition(":")
            servers.append((unquote(host), port))
    return servers
