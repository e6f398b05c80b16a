"""`RecentCounts`: the token counts of long texts seen lately, so the parts of a prompt that
come again are not tokenized again.

A chat request resends the whole conversation: the system prompt and every earlier turn come
back on each request, and only the last message is new. Estimating the prompt before
forwarding then tokenizes the same long texts over and over (≈ 60 µs per 1,000 tokens). Here
each message text of at least `MIN_CHARS` is remembered with its count, so a resent one
costs a hash and a lookup.

Counts are kept per tenant (the caller's subscription; "" for callers without one), so how
fast a count comes back never tells one subscriber what another sent. Memory is bounded by
the characters held (least recently used first out); a text longer than a sixteenth of the
bound is counted but not kept.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import TYPE_CHECKING, Final

if TYPE_CHECKING:
    from aigw.tokenizer.encodings import Encoding

MIN_CHARS: Final = 200  # shorter texts tokenize in a few µs: not worth a slot
DEFAULT_MAX_CHARS: Final = 4 << 20  # per worker process: 4-16 MB, by the texts' width


class RecentCounts:
    def __init__(self, max_chars: int = DEFAULT_MAX_CHARS, min_chars: int = MIN_CHARS) -> None:
        self.max_chars = max_chars
        self.min_chars = min_chars
        self._largest = max_chars // 16
        self._counts: OrderedDict[tuple[str, str, str], int] = OrderedDict()
        self._chars = 0

    def __len__(self) -> int:
        return len(self._counts)

    @property
    def chars(self) -> int:
        """Characters of the texts held."""
        return self._chars

    def held(self) -> list[tuple[str, str, str]]:
        """(tenant, encoding, text) of every count held, least recently used first."""
        return list(self._counts)

    def remembering(self, encoding: Encoding, name: str, tenant: str) -> Encoding:
        """`encoding`, counting through this cache for `tenant`'s texts."""
        return _Remembering(self, encoding, name, tenant)

    def count(self, encoding: Encoding, name: str, tenant: str, text: str) -> int:
        """Tokens in `text` with `encoding` (named `name`), remembered for `tenant`."""
        if not self.min_chars <= len(text) <= self._largest:
            return encoding.count(text)
        key = (tenant, name, text)
        counts = self._counts
        found = counts.get(key)
        if found is not None:
            counts.move_to_end(key)
            return found
        tokens = counts[key] = encoding.count(text)
        self._chars += len(text)
        while self._chars > self.max_chars:
            (_, _, gone), _ = counts.popitem(last=False)
            self._chars -= len(gone)
        return tokens


class _Remembering:
    """An `Encoding` whose counts go through `RecentCounts` for one tenant."""

    __slots__ = ("_cache", "_encoding", "_name", "_tenant")

    def __init__(self, cache: RecentCounts, encoding: Encoding, name: str, tenant: str) -> None:
        self._cache, self._encoding, self._name, self._tenant = cache, encoding, name, tenant

    def count(self, text: str) -> int:
        return self._cache.count(self._encoding, self._name, self._tenant, text)
