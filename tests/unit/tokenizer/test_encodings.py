"""Model → encoding, and `TokenCounter`: background loading, single flight, counting."""

from __future__ import annotations

import asyncio
import threading

import pytest

from aigw.tokenizer import CL100K, DEFAULT_ENCODING, O200K, TokenCounter, encoding_name_for
from aigw.tokenizer.encodings import LARGE_TEXT_CHARS


@pytest.mark.parametrize(
    ("model", "expected"),
    [
        ("gpt-4o", O200K),
        ("gpt-4o-mini", O200K),
        ("GPT-4o-2024-08-06", O200K),
        ("gpt-4.1", O200K),
        ("gpt-4.1-nano", O200K),
        ("gpt-4.5-preview", O200K),
        ("gpt-5", O200K),
        ("gpt-5-mini", O200K),
        ("o1", O200K),
        ("o1-mini", O200K),
        ("o3-mini", O200K),
        ("o4-mini", O200K),
        ("chatgpt-4o-latest", O200K),
        ("openai/gpt-4o", O200K),
        ("gpt-4", CL100K),
        ("GPT-4", CL100K),
        ("gpt-4-0613", CL100K),
        ("gpt-4-32k", CL100K),
        ("gpt-4-turbo", CL100K),
        ("gpt-4-turbo-2024-04-09", CL100K),
        ("gpt-4-1106-preview", CL100K),
        ("gpt-3.5-turbo", CL100K),
        ("gpt-3.5-turbo-instruct", CL100K),
        ("gpt-35-turbo", CL100K),
        ("text-embedding-3-small", CL100K),
        ("text-embedding-3-large", CL100K),
        ("text-embedding-ada-002", CL100K),
        ("my-prod-deployment", DEFAULT_ENCODING),
        ("", DEFAULT_ENCODING),
        (None, DEFAULT_ENCODING),
    ],
)
def test_encoding_for_model(model: str | None, expected: str) -> None:
    assert encoding_name_for(model) == expected


def test_the_default_is_o200k() -> None:
    assert DEFAULT_ENCODING == O200K


class FakeEncoding:
    def __init__(self, name: str) -> None:
        self.name = name

    def count(self, text: str) -> int:
        return len(text.split())


class GatedLoader:
    """Blocks each load until released, like a slow native load, and counts the calls.

    (It waits without the GIL; quicktok's real load holds it, see the encodings docstring.)
    """

    def __init__(self) -> None:
        self.release = threading.Event()
        self.calls: list[str] = []
        self.threads: set[int] = set()
        self.fail_next = False

    def __call__(self, name: str) -> FakeEncoding:
        self.calls.append(name)
        self.threads.add(threading.get_ident())
        if not self.release.wait(timeout=10):
            raise TimeoutError("the test never released the load")
        if self.fail_next:
            self.fail_next = False
            raise OSError("encoding file unreadable")
        return FakeEncoding(name)


async def test_start_loads_before_returning_off_the_loop_one_at_a_time() -> None:
    loader = GatedLoader()
    counter = TokenCounter([O200K, CL100K], loader=loader)
    starting = asyncio.create_task(counter.start())
    ticks = 0
    for _ in range(20):  # the loop keeps turning while the loads are blocked in a thread
        await asyncio.sleep(0.001)
        ticks += 1
    assert ticks == 20 and not starting.done()
    assert not counter.is_loaded(O200K) and not counter.is_loaded(CL100K)
    assert threading.get_ident() not in loader.threads
    # One preload at a time: the native load holds the GIL, two at once would add up.
    assert loader.calls == [O200K]
    loader.release.set()
    await starting  # start() returns once both are loaded, before the gateway is ready
    assert counter.is_loaded(O200K) and counter.is_loaded(CL100K)
    assert (await counter.encoding(O200K)).count("a b c") == 3
    assert sorted(loader.calls) == sorted([O200K, CL100K])
    await counter.close()


async def test_concurrent_callers_share_one_load() -> None:
    loader = GatedLoader()
    counter = TokenCounter((), loader=loader)
    waiters = [asyncio.create_task(counter.encoding(O200K)) for _ in range(10)]
    waiters += [asyncio.create_task(counter.encoding(CL100K)) for _ in range(10)]
    await asyncio.sleep(0.01)
    loader.release.set()
    results = await asyncio.gather(*waiters)
    assert len({id(result) for result in results[:10]}) == 1
    assert len({id(result) for result in results[10:]}) == 1
    await counter.encoding(O200K)
    assert sorted(loader.calls) == sorted([O200K, CL100K])
    await counter.close()


async def test_a_cancelled_waiter_does_not_cancel_the_load() -> None:
    loader = GatedLoader()
    counter = TokenCounter((), loader=loader)
    first = asyncio.create_task(counter.encoding(O200K))
    await asyncio.sleep(0.01)
    first.cancel()
    loader.release.set()
    assert (await counter.encoding(O200K)).count("x") == 1
    assert loader.calls == [O200K]
    await counter.close()


async def test_a_failed_load_reaches_its_waiters_and_the_next_call_retries() -> None:
    loader = GatedLoader()
    loader.fail_next = True
    loader.release.set()
    counter = TokenCounter((), loader=loader)
    with pytest.raises(OSError, match="unreadable"):
        await counter.encoding(O200K)
    assert not counter.is_loaded(O200K)
    assert (await counter.encoding(O200K)).count("x y") == 2
    assert loader.calls == [O200K, O200K]
    await counter.close()


async def test_count_loads_on_demand_and_moves_large_texts_off_the_loop() -> None:
    threads: list[int] = []

    class Recording(FakeEncoding):
        def count(self, text: str) -> int:
            threads.append(threading.get_ident())
            return super().count(text)

    counter = TokenCounter((), loader=Recording)
    assert await counter.count(O200K, "a b c") == 3
    assert threads == [threading.get_ident()]
    words = LARGE_TEXT_CHARS // 2 + 1
    assert await counter.count(O200K, "a " * words) == words
    assert threads[1] != threading.get_ident()
    await counter.close()


async def test_count_text_needs_a_loaded_encoding() -> None:
    loader = GatedLoader()
    loader.release.set()
    counter = TokenCounter((), loader=loader)
    with pytest.raises(LookupError, match="not loaded"):
        counter.count_text(O200K, "a b")
    await counter.encoding(O200K)
    assert counter.count_text(O200K, "a b") == 2
    assert counter.count_text(O200K, "") == 0
    await counter.close()


async def test_unknown_encodings_are_refused() -> None:
    with pytest.raises(ValueError, match="unknown encoding"):
        TokenCounter(["p50k_base"])
    counter = TokenCounter(())
    with pytest.raises(ValueError, match="unknown encoding"):
        await counter.encoding("r50k_base")


async def test_close_waits_for_loads_in_flight_then_refuses_new_ones() -> None:
    loader = GatedLoader()
    counter = TokenCounter([O200K, CL100K], loader=loader)
    starting = asyncio.create_task(counter.start())  # start() waits for its preloads
    await asyncio.sleep(0.01)
    closing = asyncio.create_task(counter.close())
    await asyncio.sleep(0.01)
    assert not closing.done()
    loader.release.set()
    await closing
    await asyncio.gather(starting, return_exceptions=True)
    assert counter.is_loaded(O200K)  # what was loaded still counts for in-flight requests
    assert counter.count_text(O200K, "a") == 1
    assert loader.calls == [O200K]  # the remaining preloads were not started
    with pytest.raises(RuntimeError, match="closed"):
        await counter.encoding(CL100K)


async def test_the_bundled_encodings_count_exactly(counter: TokenCounter) -> None:
    for name in (O200K, CL100K):
        assert counter.count_text(name, "hello world") == 2
        # Special-token strings in user text are ordinary text, never an error.
        assert counter.count_text(name, "<|endoftext|>") > 1
