from __future__ import annotations

from collections.abc import AsyncIterator

import pytest
import quicktok

from aigw.tokenizer import CL100K, O200K, TokenCounter


def tokens(encoding: str, text: str) -> int:
    """The reference count, straight from the tokenizer."""
    return int(quicktok.get_encoding(encoding).count(text))


@pytest.fixture
async def counter() -> AsyncIterator[TokenCounter]:
    # quicktok keeps loaded encodings per process, so only the first test pays the load.
    counter = TokenCounter([O200K, CL100K])
    await counter.start()
    await counter.encoding(O200K)
    await counter.encoding(CL100K)
    yield counter
    await counter.close()
