"""What a request cost: the configured price per one million tokens, applied exactly.

Money is kept as integer nano-units (1e-9 of the currency) so sums over any grouping add up to
the grand total to the last digit; each record is rounded once, half-even, when it is priced.
The configured Decimal prices become exact integer ratios once, so pricing a request is
integer arithmetic: the same result as Decimal, without its cost on the request path.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, field
from decimal import Decimal

from aigw.config.model import PriceConfig
from aigw.telemetry.record import RequestRecord
from aigw.usage.model import Usage

# Nano-units per currency unit, divided by the million tokens a price is quoted for.
_NANOS_PER_TOKEN_PRICE = 1_000_000_000 // 1_000_000


@dataclass(frozen=True, slots=True)
class Price:
    """Per one million tokens, in `currency`."""

    input: Decimal
    cached_input: Decimal
    output: Decimal
    currency: str
    # The three prices in nano-units per token as integers over one common denominator:
    # exact integer arithmetic per request, several times faster than Decimal.
    rates: tuple[int, int, int, int] = field(init=False, compare=False, repr=False)

    def __post_init__(self) -> None:
        ratios = [
            (price * _NANOS_PER_TOKEN_PRICE).as_integer_ratio()
            for price in (self.input, self.cached_input, self.output)
        ]
        denominator = math.lcm(*(d for _, d in ratios))
        uncached, cached, output = (n * (denominator // d) for n, d in ratios)
        object.__setattr__(self, "rates", (uncached, cached, output, denominator))

    @classmethod
    def from_config(cls, config: PriceConfig) -> Price:
        cached = config.input if config.cached_input is None else config.cached_input
        return cls(config.input, cached, config.output, config.currency)


class PriceTable:
    """Prices by model or deployment name, as requests name them."""

    def __init__(self, prices: Mapping[str, PriceConfig]) -> None:
        self._prices = {name: Price.from_config(config) for name, config in prices.items()}

    def __len__(self) -> int:
        return len(self._prices)

    def price_for(self, record: RequestRecord) -> Price | None:
        """The deployment's price, else the model's. An Azure OpenAI deployment decides
        which model answers, whatever the body's `model` says, so a caller cannot pick a
        cheaper price by naming another model."""
        for name in (record.deployment, record.model):
            if name is not None and name in self._prices:
                return self._prices[name]
        return None


def cost_nanos(usage: Usage, price: Price) -> int:
    """The cost in 1e-9 currency units, rounded half-even once.

    Cached prompt tokens are charged at the cached price and the rest at the input price.
    Reasoning tokens are already part of the completion tokens, so they are not added again.
    """
    cached = min(max(usage.cached_tokens, 0), max(usage.prompt_tokens, 0))
    uncached = max(usage.prompt_tokens, 0) - cached
    completion = max(usage.completion_tokens, 0)
    input_rate, cached_rate, output_rate, denominator = price.rates
    exact = uncached * input_rate + cached * cached_rate + completion * output_rate
    nanos, remainder = divmod(exact, denominator)
    # Half-even: a remainder of exactly one half rounds to the even neighbour.
    if 2 * remainder > denominator or (2 * remainder == denominator and nanos % 2):
        nanos += 1
    return nanos
