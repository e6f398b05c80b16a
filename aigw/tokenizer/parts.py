"""`PromptParts`: what a request body contributes to its prompt, before anything is counted.

Walking the body (pure Python, cheap) is kept apart from tokenizing (native, the costly
part), so the caller can decide where the counting runs by the amount of text found.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from aigw.tokenizer.encodings import Encoding


@dataclass(slots=True)
class PromptParts:
    encoding: str  # the encoding name: some overheads differ between encodings
    texts: list[str] = field(default_factory=list)
    fixed: int = 0  # tokens known without tokenizing: overheads, images, token id arrays
    chars: int = 0

    def text(self, value: object) -> None:
        """Count `value` if it is a non-empty string; anything else adds nothing."""
        if isinstance(value, str) and value:
            self.texts.append(value)
            self.chars += len(value)

    def tokens(self, count: int) -> None:
        self.fixed += count

    def token_ids(self, value: object) -> None:
        """A prompt given as token ids: one token per integer."""
        if isinstance(value, list):
            self.fixed += sum(1 for item in value if type(item) is int)

    def count(self, encoding: Encoding) -> int:
        # Each piece is tokenized on its own, as the provider renders them as separate spans.
        return max(0, self.fixed + sum(encoding.count(text) for text in self.texts))
