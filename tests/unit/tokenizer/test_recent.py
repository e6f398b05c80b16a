"""`RecentCounts`: a resent long text is counted once per tenant, counts stay exact, memory
stays bounded."""

from __future__ import annotations

from aigw.context import SubscriptionInfo
from aigw.tokenizer import O200K, TokenCounter, prompt_tokens
from aigw.tokenizer.recent import RecentCounts
from aigw.usage.meter import UsageMeter
from tests.unit.tokenizer.conftest import tokens
from tests.unit.usage.test_meter import context

SYSTEM = "You are the support assistant of a database team. " * 20  # ~1,000 characters


class CountingEncoding:
    """Counts words, and how often it was asked to count each text."""

    def __init__(self) -> None:
        self.asked: dict[str, int] = {}

    def count(self, text: str) -> int:
        self.asked[text] = self.asked.get(text, 0) + 1
        return len(text.split())


def test_a_long_text_is_counted_once_per_tenant() -> None:
    recent, encoding = RecentCounts(), CountingEncoding()
    for _ in range(3):
        assert recent.count(encoding, O200K, "sub-a", SYSTEM) == len(SYSTEM.split())
    assert encoding.asked[SYSTEM] == 1
    # Another tenant's first count is a real one: how fast it comes back tells nothing.
    assert recent.count(encoding, O200K, "sub-b", SYSTEM) == len(SYSTEM.split())
    assert encoding.asked[SYSTEM] == 2
    # Another encoding counts differently, so it is kept apart too.
    recent.count(encoding, "cl100k_base", "sub-a", SYSTEM)
    assert encoding.asked[SYSTEM] == 3


def test_short_and_huge_texts_are_counted_every_time() -> None:
    recent, encoding = RecentCounts(max_chars=16_000, min_chars=200), CountingEncoding()
    short, huge = "hello there " * 10, "word " * 400  # 120 and 2,000 characters
    for _ in range(2):
        recent.count(encoding, O200K, "", short)
        recent.count(encoding, O200K, "", huge)  # above a sixteenth of the bound
    assert encoding.asked == {short: 2, huge: 2}
    assert len(recent) == 0


def test_the_least_recently_used_texts_leave_first() -> None:
    recent, encoding = RecentCounts(max_chars=2_400, min_chars=10), CountingEncoding()
    texts = [f"text {index:02d} " + "x" * 142 for index in range(20)]  # 150 characters each
    for text in texts[:15]:
        recent.count(encoding, O200K, "", text)
    recent.count(encoding, O200K, "", texts[0])  # used again: now the most recent
    for text in texts[15:]:
        recent.count(encoding, O200K, "", text)
    assert (len(recent), recent.chars) == (16, 2_400)
    recent.count(encoding, O200K, "", texts[0])
    assert encoding.asked[texts[0]] == 1, "kept: it was used after the oldest ones"
    recent.count(encoding, O200K, "", texts[1])
    assert encoding.asked[texts[1]] == 2, "the oldest left"


async def test_a_resent_conversation_keeps_its_exact_count(counter: TokenCounter) -> None:
    history = [
        {"role": "system", "content": SYSTEM},
        {"role": "user", "content": "Why did last night's export fail? " * 10},
        {"role": "assistant", "content": "The connection to the database was dropped. " * 8},
    ]
    first = {"model": "gpt-4o", "messages": [*history, {"role": "user", "content": "Fix?"}]}
    second = {"model": "gpt-4o", "messages": [*history, {"role": "user", "content": "Why?"}]}
    for body in (first, second, first):
        uncached = await prompt_tokens(counter, "chat-completions", body, "gpt-4o")
        cached = await prompt_tokens(counter, "chat-completions", body, "gpt-4o", tenant="t1")
        assert cached == uncached
    held = {text for _, _, text in counter.recent.held()}
    assert held == {message["content"] for message in history}
    assert uncached == await prompt_tokens(counter, "chat-completions", first, "gpt-4o")
    assert tokens(O200K, SYSTEM) < uncached


async def test_the_meter_counts_for_the_caller_s_subscription(counter: TokenCounter) -> None:
    body = {"model": "gpt-4o", "messages": [{"role": "system", "content": SYSTEM}]}
    for subscription in ("sub-a", "sub-b", None, "sub-a"):
        ctx = context(body)
        if subscription is not None:
            ctx.subscription = SubscriptionInfo(subscription, subscription, "primary")
        meter = UsageMeter(ctx, counter)
        assert await meter.estimate_prompt() > tokens(O200K, SYSTEM)
    held = sorted(tenant for tenant, _, _ in counter.recent.held())
    # Without a subscription (or a user), the client's address is whose texts they are.
    assert held == ["ip:203.0.113.7", "s:sub-a", "s:sub-b"]
