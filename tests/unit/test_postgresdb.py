"""PostgreSQL URLs: one the driver would misread (a reserved character left unencoded in the
password) is refused when the config loads, and no message ever quotes a piece of it."""

from __future__ import annotations

import pytest

from aigw.config.errors import ConfigError
from aigw.config.loader import load_config_text
from aigw.postgresdb import location

RESERVED = "percent-encode reserved characters"
# A password with a reserved character left as it is, the same URL with it percent-encoded,
# and what the config error says about the first. No piece of a password may show.
MISREAD = [
    (
        "postgresql://aigw:Xy9/Secr3tTail@db.example.net/aigw",
        "postgresql://aigw:Xy9%2FSecr3tTail@db.example.net/aigw",
        RESERVED,
    ),
    (
        "postgresql://aigw:Xy9#Secr3tTail@db.example.net/aigw",
        "postgresql://aigw:Xy9%23Secr3tTail@db.example.net/aigw",
        RESERVED,
    ),
    (
        "postgresql://aigw:Xy9?Secr3tTail@db.example.net/aigw",
        "postgresql://aigw:Xy9%3FSecr3tTail@db.example.net/aigw",
        RESERVED,
    ),
    (
        "postgresql://aigw:Xy9?k=Secr3tTail@db.example.net/aigw?sslmode=require",
        "postgresql://aigw:Xy9%3Fk%3DSecr3tTail@db.example.net/aigw?sslmode=require",
        RESERVED,
    ),
    (  # asyncpg splits at the first '@', urllib at the last
        "postgresql://aigw:Xy9@Secr3tTail@db.example.net/aigw",
        "postgresql://aigw:Xy9%40Secr3tTail@db.example.net/aigw",
        RESERVED,
    ),
    (  # urllib's own error quotes what it took for an IPv6 address: "Pq7Z"
        "postgresql://aigw:Xy9[Pq7Z]/Secr3tTail@db.example.net/aigw",
        "postgresql://aigw:Xy9%5BPq7Z%5D%2FSecr3tTail@db.example.net/aigw",
        "cannot be parsed",
    ),
    (
        "postgresql://aigw:Xy9[Secr3tTail@db.example.net/aigw",
        "postgresql://aigw:Xy9%5BSecr3tTail@db.example.net/aigw",
        "cannot be parsed",
    ),
]
PIECES = ("Xy9", "Pq7Z", "Secr3tTail")


def config_with(section: str, url: str) -> str:
    if section == "store":
        return f"store: {{url: '{url}'}}\n"
    return f"usage: {{ledger: {{url: '{url}'}}}}\n"


@pytest.mark.parametrize("section", ["store", "usage.ledger"])
@pytest.mark.parametrize(("url", "encoded", "problem"), MISREAD)
def test_a_misread_url_is_refused_at_load_without_quoting_it(
    section: str, url: str, encoded: str, problem: str
) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(config_with(section, url))
    found = {issue.path: issue.message for issue in caught.value.issues}
    assert list(found) == [f"{section}.url"] and problem in found[f"{section}.url"], found
    assert not any(piece in str(caught.value) for piece in PIECES), found
    # Percent-encoded as the message says, the same password loads.
    assert load_config_text(config_with(section, encoded)).source == "<string>"


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("postgresql://aigw:pw@db.example.net:54x32/aigw", "the port is not a number"),
        ("postgresql://aigw:pw@db.example.net:70000/aigw", "not between 1 and 65535"),
        ("postgresql://aigw:pw@db.example.net/aigw?port=5x", "the port is not a number"),
        ("postgresql://aigw:pw@db.example.net/aigw?sslmode", "name=value pairs"),
        ("postgresql://aigw:pw@a.example,,b.example/aigw", "a host in the URL's list"),
    ],
)
def test_a_url_the_driver_cannot_read_is_a_field_error(url: str, problem: str) -> None:
    with pytest.raises(ConfigError) as caught:
        load_config_text(config_with("store", url))
    found = {issue.path: issue.message for issue in caught.value.issues}
    assert list(found) == ["store.url"] and problem in found["store.url"], found
    assert not any(text in str(caught.value) for text in ("54x32", "5x", "a.example"))


@pytest.mark.parametrize(("url", "encoded", "_problem"), MISREAD)
def test_a_misread_url_names_its_server_by_a_fixed_text(
    url: str, encoded: str, _problem: str
) -> None:
    # The stores name the server in every message (startup log, retry warnings, 503s).
    assert location(url)[0] == "(unparseable URL)"
    assert location(encoded)[0] == "db.example.net:5432/aigw"
