"""An empty Redis counter database and the prompt's token count for an `llm-token-limit`
target (prepare_token_limit.py), before it starts; optionally, tokenizer throughput."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from harness.scripts import SetupError, TargetSkippedError, run_script


@dataclass(frozen=True, slots=True)
class PreparedTokenLimit:
    redis: str  # host:port/db, flushed before the launch
    encoding: str
    prompt_tokens: int  # of the body every request sends, counted as the policy counts it
    seconds: float
    tokenizer: dict[str, Any] | None = None  # throughput figures, if measured

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "redis": self.redis,
            "encoding": self.encoding,
            "prompt_tokens": self.prompt_tokens,
            "seconds": self.seconds,
        }
        return out | ({"tokenizer": self.tokenizer} if self.tokenizer else {})


def prepare_token_limit(
    python: str, config: Path, body: Path, cwd: Path, throughput: bool
) -> PreparedTokenLimit:
    """Flush the Redis database in `config`'s `counters.url` and count `body`'s prompt.

    Raises TargetSkippedError if Redis does not answer: the run goes on without this target.
    """
    args = ["--config", str(config), "--body", str(body)] + (["--throughput"] if throughput else [])
    raw = run_script(python, "prepare_token_limit.py", args, cwd, "preparing the token limit")
    if "redis_error" in raw:
        raise TargetSkippedError(
            f"Redis at {raw.get('redis')} does not answer ({raw['redis_error']}); "
            "start redis-server on 127.0.0.1:6379 to benchmark the token limit"
        )
    try:
        tokenizer = raw.get("tokenizer")
        return PreparedTokenLimit(
            redis=str(raw["redis"]),
            encoding=str(raw["encoding"]),
            prompt_tokens=int(raw["prompt_tokens"]),
            seconds=float(raw["seconds"]),
            tokenizer=dict(tokenizer) if isinstance(tokenizer, dict) else None,
        )
    except (KeyError, TypeError, ValueError) as err:
        raise SetupError(f"unexpected output from the token-limit script: {err!r}") from err
