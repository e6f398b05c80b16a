"""Which encoding a model uses, and `TokenCounter`: the loaded encodings, a runtime resource.

Encodings are big and slow to load (o200k_base ≈ 360 ms and 78 MB, cl100k_base ≈ 130 ms and
39 MB), so they load on worker threads: `TokenCounter.start()` loads the preloaded ones before
the gateway reports ready, and any other loads when a request first needs it; `encoding()`
joins a load already running (one load per encoding, ever).

quicktok holds the GIL while it builds an encoding, so the event loop still pauses for about
one load time while that thread runs; the thread only spares the loop from awaiting it. The
preloads therefore run one after the other, leaving the loop a turn between them, rather than
side by side, which would pause it for both at once.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from collections.abc import Callable, Iterable
from typing import Final, Protocol

import quicktok

from aigw.tokenizer.recent import RecentCounts

log = logging.getLogger("aigw.tokenizer")

O200K: Final = "o200k_base"
CL100K: Final = "cl100k_base"
ENCODINGS: Final = frozenset({O200K, CL100K})
# Above this much text (≈ 50k tokens, a few ms of tokenizing) counting runs on a worker
# thread, so one huge text does not hold up every other request on the loop.
LARGE_TEXT_CHARS: Final = 200_000
# Unknown models (and arbitrary Azure deployment names) get the encoding of every current
# OpenAI model family; an older model counted with it is off by a few percent, not more.
DEFAULT_ENCODING: Final = O200K

# Checked in order: the first matching prefix wins, so "gpt-4o" is tested before "gpt-4-".
_PREFIXES: Final[tuple[tuple[str, str], ...]] = (
    ("gpt-4o", O200K),
    ("gpt-4.1", O200K),
    ("gpt-4.5", O200K),
    ("gpt-5", O200K),
    ("chatgpt-4o", O200K),
    ("o1", O200K),
    ("o3", O200K),
    ("o4", O200K),
    ("gpt-4-", CL100K),  # gpt-4-turbo, gpt-4-32k, gpt-4-0613, gpt-4-1106-preview …
    ("gpt-3.5", CL100K),
    ("gpt-35", CL100K),  # Azure's spelling: gpt-35-turbo
    ("text-embedding-3-", CL100K),
    ("text-embedding-ada-002", CL100K),
    ("davinci-002", CL100K),
    ("babbage-002", CL100K),
)


def encoding_name_for(model: str | None) -> str:
    """The encoding of `model` (the body's `model`, else the Azure deployment id).

    Case-insensitive; a provider prefix such as `openai/` is ignored. None and unknown
    names get `DEFAULT_ENCODING` (o200k_base).
    """
    if not model:
        return DEFAULT_ENCODING
    name = model.strip().lower().rsplit("/", 1)[-1]
    if name == "gpt-4":
        return CL100K
    for prefix, encoding in _PREFIXES:
        if name.startswith(prefix):
            return encoding
    return DEFAULT_ENCODING


class Encoding(Protocol):
    def count(self, text: str) -> int:
        """Tokens in `text`, special-token strings counted as ordinary text."""
        ...


def load_encoding(name: str) -> Encoding:
    """Load a bundled encoding (blocking; quicktok keeps one copy per process)."""
    encoding: Encoding = quicktok.get_encoding(name)
    return encoding


def _checked(name: str) -> str:
    if name not in ENCODINGS:
        raise ValueError(f"unknown encoding {name!r}; expected one of {sorted(ENCODINGS)}")
    return name


class TokenCounter:
    """Loads encodings off the event loop, once each, and counts text with them."""

    def __init__(
        self,
        preload: Iterable[str] = (DEFAULT_ENCODING,),
        *,
        loader: Callable[[str], Encoding] = load_encoding,
    ) -> None:
        self._preload = tuple(dict.fromkeys(_checked(name) for name in preload))
        self._loader = loader
        self._loaded: dict[str, Encoding] = {}
        self._loading: dict[str, asyncio.Task[Encoding]] = {}
        self._preloading: asyncio.Task[None] | None = None
        self._closed = False
        # Counts of the long texts prompts resend (system prompts, earlier turns).
        self.recent = RecentCounts()

    async def start(self) -> None:
        """Load the preloaded encodings before the gateway reports ready: quicktok holds the
        GIL while loading (~0.5 s for o200k), so doing it in the background would stall
        requests instead. quicktok keeps them per process, so a reload finds them loaded."""
        if self._preloading is None and self._preload:
            self._preloading = asyncio.get_running_loop().create_task(self._preload_all())
            await asyncio.shield(self._preloading)

    async def _preload_all(self) -> None:
        for name in self._preload:
            if self._closed:
                return
            # Shielded so that close() stops the sequence without cancelling a running load.
            with contextlib.suppress(Exception):
                await asyncio.shield(self._begin(name))
            await asyncio.sleep(0)  # a turn for the loop before the next load holds the GIL

    async def close(self) -> None:
        """Wait for loads in flight (a thread cannot be cancelled) and refuse new ones."""
        self._closed = True
        if self._preloading is not None:
            self._preloading.cancel()
            await asyncio.gather(self._preloading, return_exceptions=True)
        pending = list(self._loading.values())
        if pending:
            await asyncio.gather(*pending, return_exceptions=True)

    def is_loaded(self, name: str) -> bool:
        return name in self._loaded

    async def encoding(self, name: str) -> Encoding:
        """The encoding `name`, loading it first if needed (joins a load in flight)."""
        encoding = self._loaded.get(name)
        if encoding is not None:
            return encoding
        _checked(name)
        if self._closed:
            raise RuntimeError(f"TokenCounter is closed; {name} was never loaded")
        # Shielded: a cancelled request must not cancel the load other requests wait for.
        return await asyncio.shield(self._begin(name))

    def count_text(self, name: str, text: str) -> int:
        """Tokens in `text` with a loaded encoding (await `encoding(name)` first)."""
        encoding = self._loaded.get(name)
        if encoding is None:
            raise LookupError(f"encoding {name} is not loaded; await encoding({name!r}) first")
        return encoding.count(text) if text else 0

    async def count(self, name: str, text: str) -> int:
        """Tokens in `text`, loading the encoding if needed; large texts off the loop."""
        encoding = await self.encoding(name)
        if len(text) > LARGE_TEXT_CHARS:
            return await asyncio.to_thread(encoding.count, text)
        return encoding.count(text) if text else 0

    def _begin(self, name: str) -> asyncio.Task[Encoding]:
        task = self._loading.get(name)
        if task is None:
            task = asyncio.get_running_loop().create_task(self._load(name))
            # A failed preload nobody awaited is already logged; retrieve it to stay quiet.
            task.add_done_callback(lambda done: done.cancelled() or done.exception())
            self._loading[name] = task
        return task

    async def _load(self, name: str) -> Encoding:
        started = time.perf_counter()
        try:
            encoding = await asyncio.to_thread(self._loader, name)
        except Exception:
            log.exception("loading the %s tokenizer failed", name)
            raise
        finally:
            # Forget the task either way: after a failure the next caller tries again.
            self._loading.pop(name, None)
        self._loaded[name] = encoding
        log.info("tokenizer %s loaded in %.0f ms", name, (time.perf_counter() - started) * 1000)
        return encoding
