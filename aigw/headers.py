"""A small case-insensitive, multi-value header list used on both sides of the proxy."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

# Hop-by-hop headers (RFC 9110 §7.6.1) never cross the gateway in either direction.
HOP_BY_HOP = frozenset(
    {
        "connection",
        "keep-alive",
        "proxy-authenticate",
        "proxy-authorization",
        "proxy-connection",
        "te",
        "trailer",
        "transfer-encoding",
        "upgrade",
    }
)
# Framing headers are owned by the server and client libraries, never by policies.
FRAMING = frozenset({"content-length", "transfer-encoding", "connection", "keep-alive"})


class Headers:
    """Ordered header list; names are stored lower-cased, values as text (latin-1)."""

    __slots__ = ("_items",)

    def __init__(self, items: Iterable[tuple[str, str]] = ()) -> None:
        self._items: list[tuple[str, str]] = [(k.lower(), v) for k, v in items]

    @classmethod
    def from_asgi(cls, raw: Iterable[tuple[bytes, bytes]]) -> Headers:
        """From raw byte pairs (an ASGI scope or message, aiohttp's raw_headers)."""
        headers = cls.__new__(cls)
        headers._items = [(k.decode("latin-1").lower(), v.decode("latin-1")) for k, v in raw]
        return headers

    def get(self, name: str, default: str | None = None) -> str | None:
        name = name.lower()
        for key, value in self._items:
            if key == name:
                return value
        return default

    def get_all(self, name: str) -> list[str]:
        name = name.lower()
        return [value for key, value in self._items if key == name]

    def get_joined(self, name: str) -> str | None:
        """All values of a header joined with commas, as APIM's GetValueOrDefault does."""
        values = self.get_all(name)
        return ", ".join(values) if values else None

    def __contains__(self, name: object) -> bool:
        if not isinstance(name, str):
            return False
        name = name.lower()
        return any(key == name for key, _ in self._items)

    def set(self, name: str, value: str) -> None:
        self.delete(name)
        self._items.append((name.lower(), value))

    def add(self, name: str, value: str) -> None:
        self._items.append((name.lower(), value))

    def delete(self, name: str) -> None:
        name = name.lower()
        self._items = [(k, v) for k, v in self._items if k != name]

    def items(self) -> list[tuple[str, str]]:
        return list(self._items)

    def __iter__(self) -> Iterator[tuple[str, str]]:
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def copy(self) -> Headers:
        clone = Headers.__new__(Headers)
        clone._items = list(self._items)
        return clone

    def without_hop_by_hop(self) -> Headers:
        """A copy for the other side of the proxy (see `forwardable`)."""
        clone = Headers.__new__(Headers)
        clone._items = self.forwardable()
        return clone

    def forwardable(self) -> list[tuple[str, str]]:
        """Headers minus hop-by-hop ones and those listed in `Connection`."""
        listed = {
            token.strip().lower()
            for value in self.get_all("connection")
            for token in value.split(",")
            if token.strip()
        }
        return [(k, v) for k, v in self._items if k not in HOP_BY_HOP and k not in listed]

    def __repr__(self) -> str:
        return f"Headers({self._items!r})"
