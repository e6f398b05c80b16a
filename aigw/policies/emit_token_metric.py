"""`llm-emit-token-metric` and `azure-openai-emit-token-metric`: token counts by dimensions.

As in APIM, the policy sits in inbound and its counts are emitted once the response is done
(streams included): prompt, completion and total tokens, and ours besides, cached-prompt
and reasoning tokens. Counts are the backend's `usage` (asked for in streams when the client
did not ask), else counted by the gateway, never an estimate of a stream. A dimension without
a value takes the gateway's own when its name is a default one (API ID, Subscription ID …).

Unlike APIM, a dimension's name must be a constant: it becomes a Prometheus label, and a
metric's labels are fixed. Values go to Prometheus (`aigw_llm_tokens_total`) and, when
configured, OTLP; the cardinality guard caps the label sets each produces.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING, Final

from pydantic import BaseModel, ConfigDict, Field

from aigw.config.model import kebab
from aigw.context import RequestContext, Response
from aigw.expressions import Value
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.limit_support import lazy_token_counter
from aigw.policies.registry import register
from aigw.policies.values import text_of
from aigw.telemetry.labels import RESERVED_LABELS, label_name
from aigw.usage.meter import meter_for

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

MAX_DIMENSIONS: Final = 16
MAX_VALUE_CHARS: Final = 128

Filler = Callable[[RequestContext], str | None]

# The values the gateway fills in when a dimension names one of these and gives no value.
DEFAULT_DIMENSIONS: Final[dict[str, Filler]] = {
    "api id": lambda ctx: ctx.api.id,
    "operation id": lambda ctx: ctx.operation.id,
    "product id": lambda ctx: ctx.product.id if ctx.product else None,
    "user id": lambda ctx: ctx.user.id if ctx.user else None,
    "subscription id": lambda ctx: ctx.subscription.id if ctx.subscription else None,
    "location": lambda ctx: ctx.services.location,
    "gateway id": lambda ctx: ctx.services.gateway_id,
    "backend id": lambda ctx: ctx.backend_id,
    # Ours.
    "model": lambda ctx: ctx.model or ctx.deployment_id,
    "deployment": lambda ctx: ctx.deployment_id,
    "client ip": lambda ctx: ctx.request.client_ip,
}


class Dimension(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True
    )

    name: str = Field(min_length=1, max_length=100)
    value: str | None = None


class EmitTokenMetricConfig(PolicyConfig):
    namespace: str = Field("API Management", min_length=1, max_length=200)
    dimensions: list[Dimension] = Field(min_length=1)


class EmitTokenMetric(Policy):
    config_model = EmitTokenMetricConfig
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, EmitTokenMetricConfig)
        super().__init__(config, build)
        self.namespace = config.namespace
        if "@(" in config.namespace:
            build.error("must be a constant (no expressions), as in APIM", ".namespace")
        if len(config.dimensions) > MAX_DIMENSIONS:
            build.error(f"at most {MAX_DIMENSIONS} dimensions", ".dimensions")
        self.counter = lazy_token_counter(build)
        self.dimensions: list[tuple[str, Value | Filler]] = []
        labels: set[str] = set()
        for index, dimension in enumerate(config.dimensions):
            where = f".dimensions[{index}]"
            label = label_name(dimension.name)
            if "@(" in dimension.name:
                build.error("must be a constant: it names a metric label", where + ".name")
            elif not label or label[0].isdigit() or label in RESERVED_LABELS:
                build.error(f"'{dimension.name}' cannot name a metric label", where + ".name")
            elif label in labels:
                build.error(f"'{dimension.name}' is given twice", where + ".name")
            labels.add(label)
            self.dimensions.append((dimension.name, self._source(dimension, build, where)))

    @staticmethod
    def _source(dimension: Dimension, build: BuildContext, where: str) -> Value | Filler:
        if dimension.value is not None:
            return build.value(dimension.value, where + ".value")
        filler = DEFAULT_DIMENSIONS.get(dimension.name.strip().lower())
        if filler is None:
            known = ", ".join(name.title().replace("Id", "ID") for name in DEFAULT_DIMENSIONS)
            build.error(
                f"'{dimension.name}' needs a 'value': only these fill themselves: {known}",
                where + ".value",
            )
            return DEFAULT_DIMENSIONS["api id"]
        return filler

    async def apply(self, ctx: RequestContext) -> Response | None:
        meter_for(ctx, self.counter)  # the pipeline measures the response for us
        return None

    async def on_complete(self, ctx: RequestContext) -> None:
        meter = ctx.usage_meter
        usage = meter.usage if meter is not None else None
        if usage is None:
            return  # no model answered: nothing was used
        values: dict[str, str] = {}
        for name, source in self.dimensions:
            text = text_of(source, ctx) if isinstance(source, Value) else source(ctx)
            values[name] = (text or "")[:MAX_VALUE_CHARS]
        ctx.services.telemetry.tokens_emitted(self.namespace, values, usage)

    def describe(self) -> str:
        names = ", ".join(name for name, _ in self.dimensions)
        return f"{super().describe()} namespace={self.namespace!r} dimensions=[{names}]"


@register("llm-emit-token-metric")
class LlmEmitTokenMetric(EmitTokenMetric):
    """Any OpenAI-compatible API."""


@register("azure-openai-emit-token-metric")
class AzureOpenAiEmitTokenMetric(EmitTokenMetric):
    """The same policy under APIM's Azure OpenAI name."""
