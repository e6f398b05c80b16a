"""What a request used, and where the numbers came from."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

UsageSource = Literal["backend", "counted", "estimated"]


@dataclass(frozen=True, slots=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int
    total_tokens: int
    cached_tokens: int = 0  # prompt tokens served from the provider's prompt cache
    reasoning_tokens: int = 0  # completion tokens spent on reasoning (o-series)
    # backend: the response's `usage`; counted: the gateway counted prompt and completion
    # text itself (no usage from the backend); estimated: only the prompt estimate is known.
    source: UsageSource = "backend"
