"""Counting prompt tokens before a request is forwarded, with the model's own tokenizer.

Usage::

    counter = TokenCounter(preload=[O200K, CL100K])  # one per runtime
    await counter.start()                             # loads in the background, returns at once
    tokens = await prompt_tokens(counter, "chat-completions", body, body.get("model"))
    ...
    await counter.close()

For other text (a streamed completion), pick the encoding with `encoding_name_for(model)`,
`await counter.encoding(name)` once, then call `counter.count_text(name, text)`.
The encodings ship inside the `quicktok` package: nothing is downloaded at run time.
"""

from __future__ import annotations

from aigw.tokenizer.encodings import (
    CL100K,
    DEFAULT_ENCODING,
    O200K,
    Encoding,
    TokenCounter,
    encoding_name_for,
)
from aigw.tokenizer.prompt import prompt_tokens

__all__ = [
    "CL100K",
    "DEFAULT_ENCODING",
    "O200K",
    "Encoding",
    "TokenCounter",
    "encoding_name_for",
    "prompt_tokens",
]
