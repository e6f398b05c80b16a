"""Prices: lookup by model then deployment, and exact cost in nano-units."""

from __future__ import annotations

import random
from decimal import ROUND_HALF_EVEN, Decimal, localcontext

from aigw.config.model import PriceConfig
from aigw.ledger.prices import Price, PriceTable, cost_nanos
from aigw.usage.model import Usage
from tests.unit.ledger.records import record


def price(input: str, output: str = "0", cached: str | None = None, currency: str = "USD") -> Price:
    return Price.from_config(
        PriceConfig(
            input=Decimal(input),
            output=Decimal(output),
            cached_input=None if cached is None else Decimal(cached),
            currency=currency,
        )
    )


def test_cost_is_per_million_tokens_in_nanos() -> None:
    usage = Usage(prompt_tokens=1_000_000, completion_tokens=1_000_000, total_tokens=2_000_000)
    assert cost_nanos(usage, price("2.50", "10")) == 12_500_000_000  # 2.50 + 10.00


def test_cached_tokens_use_the_cached_price_and_default_to_input() -> None:
    usage = Usage(prompt_tokens=1000, completion_tokens=0, total_tokens=1000, cached_tokens=400)
    # 600 * 2.50 + 400 * 1.25 per 1M tokens = 0.0015 + 0.0005 = 0.002
    assert cost_nanos(usage, price("2.50", cached="1.25")) == 2_000_000
    # Without a cached price every prompt token costs the input price.
    assert cost_nanos(usage, price("2.50")) == 2_500_000


def test_reasoning_tokens_are_not_charged_twice() -> None:
    plain = Usage(prompt_tokens=0, completion_tokens=100, total_tokens=100)
    reasoning = Usage(prompt_tokens=0, completion_tokens=100, total_tokens=100, reasoning_tokens=80)
    assert cost_nanos(plain, price("1", "4")) == cost_nanos(reasoning, price("1", "4")) == 400_000


def test_rounding_is_half_even_once_per_record() -> None:
    # 1 token at 0.0005 per 1M = 0.5 nano: rounds to the even 0; 3 tokens = 1.5 → 2.
    one = Usage(prompt_tokens=1, completion_tokens=0, total_tokens=1)
    three = Usage(prompt_tokens=3, completion_tokens=0, total_tokens=3)
    assert cost_nanos(one, price("0.0005")) == 0
    assert cost_nanos(three, price("0.0005")) == 2
    # Exact with many decimals and large counts (no float on the way).
    big = Usage(prompt_tokens=123_456_789_012, completion_tokens=0, total_tokens=0)
    # 123456789012 * 123.456789 nanos = 15241578751672.2468
    assert cost_nanos(big, price("0.123456789")) == 15_241_578_751_672


def test_inconsistent_counts_never_cost_negative() -> None:
    odd = Usage(prompt_tokens=10, completion_tokens=-3, total_tokens=7, cached_tokens=50)
    assert cost_nanos(odd, price("1", "1", cached="0.5")) == 5_000  # 10 cached tokens at 0.5


def test_lookup_by_deployment_then_model() -> None:
    table = PriceTable(
        {
            "gpt-4o": PriceConfig(input=Decimal(1)),
            "my-deployment": PriceConfig(input=Decimal(2), currency="EUR"),
        }
    )
    # The deployment decides the model that answers: naming a cheaper model in the body
    # changes nothing.
    found = table.price_for(record(model="gpt-4o", deployment="my-deployment"))
    assert found is not None and found.currency == "EUR"
    assert table.price_for(record(model="gpt-4o", deployment="unpriced")) == price("1")
    assert table.price_for(record(model="gpt-4o", deployment=None)) == price("1")
    assert table.price_for(record(model=None, deployment=None)) is None
    assert table.price_for(record(model="other", deployment="other")) is None


def test_matches_decimal_arithmetic_exactly() -> None:
    rand = random.Random(42)
    for _ in range(3000):
        rates = [Decimal(rand.randint(0, 10**7)) / 10 ** rand.randint(0, 12) for _ in range(3)]
        prompt = rand.randint(0, 10**7)
        cached = rand.randint(0, prompt)
        completion = rand.randint(0, 10**7)
        with localcontext() as context:
            context.prec = 100
            exact = (
                (prompt - cached) * rates[0] + cached * rates[1] + completion * rates[2]
            ) * 1000
            expected = int(exact.quantize(Decimal(1), rounding=ROUND_HALF_EVEN))
        usage = Usage(prompt, completion, prompt + completion, cached_tokens=cached)
        assert cost_nanos(usage, Price(rates[0], rates[1], rates[2], "USD")) == expected
