"""Before an `llm-token-limit` target starts (aigw-token-limit): an empty counter database,
the request body's prompt tokens, and, optionally, what counting them costs.

Run as a script with the project's interpreter: it uses redis-py and aigw's tokenizer, which
the harness itself never imports.

1. Reads `counters.url` from the generated gateway config, checks that Redis answers and
   empties that database (FLUSHDB), so every launch starts with no counters. It only ever
   flushes a numbered database other than 0 on loopback. If Redis does not answer it prints
   `{"redis_error": ...}` and exits 0: the harness then skips the target.
2. Counts the body's prompt tokens with `aigw.tokenizer.prompt_tokens`, as the policy does.
3. With `--throughput`, times in-process: loading the body's encoding, `prompt_tokens` on the
   body (walk + tokenize, what a request pays), and `count_text` on a 100 KB text (standard
   library docstrings: real prose the body does not contain), each first cold, then repeated.

Prints one JSON line.

    python -P bench/harness/prepare_token_limit.py --config GATEWAY.yaml --body BODY.json
"""

from __future__ import annotations

import argparse
import asyncio
import importlib
import inspect
import json
import statistics
import time
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import redis
import yaml

from aigw.tokenizer import TokenCounter, encoding_name_for, prompt_tokens

LOOPBACK_HOSTS = ("127.0.0.1", "localhost", "::1")
OPERATION = "chat-completions"
TEXT_BYTES = 100_000
TIMED_SECONDS = 1.0  # per measurement, after a short warm-up
DOC_MODULES = (
    "argparse",
    "asyncio.events",
    "asyncio.streams",
    "collections",
    "email.message",
    "http.client",
    "http.cookiejar",
    "json",
    "logging",
    "pathlib",
    "shutil",
    "subprocess",
    "tarfile",
    "threading",
    "typing",
    "unittest.case",
    "urllib.request",
    "zipfile",
)


def flush_counters(url: str) -> dict[str, Any]:
    """Empty the counter database named by `url`; {"redis_error": why} if Redis is not there."""
    parts = urlsplit(url)
    db = parts.path.strip("/") or "0"
    where = f"{parts.hostname}:{parts.port or 6379}/{db}"  # never the password
    if parts.hostname not in LOOPBACK_HOSTS or not db.isdigit() or db == "0":
        raise SystemExit(f"refusing to flush {where}: only a loopback database other than 0")
    client = redis.Redis.from_url(url, socket_timeout=2.0, socket_connect_timeout=2.0)
    try:
        client.ping()
        keys = int(client.dbsize())
        client.flushdb()
    except redis.RedisError as err:
        return {"redis": where, "redis_error": f"{type(err).__name__}: {err}"}
    finally:
        client.close()
    return {"redis": where, "flushed_keys": keys}


def sample_text(size: int) -> str:
    """`size` bytes of real technical English the body has none of: docstrings of standard
    library modules, in a fixed order (fixed for a given Python version)."""
    docs: list[str] = []
    length = 0
    for name in DOC_MODULES:
        module = importlib.import_module(name)
        for obj in [module, *(value for _, value in sorted(vars(module).items()))]:
            if obj is not module and getattr(obj, "__module__", None) != module.__name__:
                continue
            doc = inspect.getdoc(obj)
            if doc and doc not in docs:
                docs.append(doc)
                length += len(doc.encode()) + 2
        if length >= size:
            break
    return "\n\n".join(docs).encode()[:size].decode(errors="ignore")


async def _timed(call: Callable[[], Awaitable[int]]) -> dict[str, float]:
    """µs of the first call, then the median over about TIMED_SECONDS, and the tokens per
    second each makes. quicktok memoizes merges, so a text seen before counts faster: the
    first call is the cold figure, the median the one a repeated prompt gets (as under wrk)."""
    started = time.perf_counter()
    tokens = await call()
    first = time.perf_counter() - started
    for _ in range(3):
        await call()
    times: list[float] = []
    deadline = time.perf_counter() + TIMED_SECONDS
    while time.perf_counter() < deadline or len(times) < 5:
        started = time.perf_counter()
        await call()
        times.append(time.perf_counter() - started)
    p50 = statistics.median(times)
    return {
        "tokens": tokens,
        "first_us": round(first * 1e6, 1),
        "first_tokens_per_s": round(tokens / first),
        "calls": len(times),
        "p50_us": round(p50 * 1e6, 1),
        "tokens_per_s": round(tokens / p50),
    }


async def count(body: dict[str, Any], encoding: str, throughput: bool) -> dict[str, Any]:
    """The body's prompt tokens; with `throughput`, the timings as well."""
    counter = TokenCounter(preload=())
    started = time.perf_counter()
    await counter.encoding(encoding)  # the first load in this process (quicktok keeps it)
    load_ms = round((time.perf_counter() - started) * 1000.0, 1)
    model = body.get("model")
    try:
        if not throughput:
            tokens = await prompt_tokens(counter, OPERATION, body, model)
            return {"encoding": encoding, "prompt_tokens": tokens}
        prompt = await _timed(lambda: prompt_tokens(counter, OPERATION, body, model))
        text = sample_text(TEXT_BYTES)

        async def count_text() -> int:
            return counter.count_text(encoding, text)

        large = await _timed(count_text)
    finally:
        await counter.close()
    timings = {
        "encoding": encoding,
        "load_ms": load_ms,
        "prompt": prompt | {"bytes": len(json.dumps(body).encode())},
        "text_100k": large | {"bytes": len(text.encode())},
    }
    return {"encoding": encoding, "prompt_tokens": int(prompt["tokens"]), "tokenizer": timings}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--config", type=Path, required=True, help="the generated config")
    parser.add_argument("--body", type=Path, required=True, help="the chat request body")
    parser.add_argument("--throughput", action="store_true", help="also time the tokenizer")
    ns = parser.parse_args()
    started = time.perf_counter()
    config = yaml.safe_load(ns.config.read_text())
    url = (config.get("counters") or {}).get("url")
    if not url:
        raise SystemExit("the config has no counters.url: this target needs the Redis store")
    out = flush_counters(str(url))
    if "redis_error" in out:
        print(json.dumps(out))
        return
    body = json.loads(ns.body.read_text())
    out |= asyncio.run(count(body, encoding_name_for(body.get("model")), ns.throughput))
    out["seconds"] = round(time.perf_counter() - started, 3)
    print(json.dumps(out))


if __name__ == "__main__":
    main()
