"""Answers a backend compressed although the gateway asked for none (`Accept-Encoding:
identity`): gzip and deflate are decoded with the standard library; other codings (br,
zstd) are left as they came."""

from __future__ import annotations

import zlib
from typing import Any

_WBITS = {"gzip": 31, "x-gzip": 31, "deflate": 15}


def inflater(encoding: str) -> Any | None:
    """A streaming decoder for `encoding` (a `Content-Encoding` value, lower case), or None
    for a coding the standard library cannot decode."""
    wbits = _WBITS.get(encoding)
    return None if wbits is None else zlib.decompressobj(wbits)


def decoded(body: bytes, encoding: str, limit: int) -> bytes | None:
    """A whole compressed body decoded, at most `limit` bytes; None if it cannot be (an
    unknown coding, corrupt or truncated data, or more than `limit` bytes)."""
    decoder = inflater(encoding)
    if decoder is None:
        return None
    try:
        data: bytes = decoder.decompress(body, limit + 1)
    except zlib.error:
        return None
    if len(data) > limit or not decoder.eof or decoder.unused_data:
        return None
    return data
