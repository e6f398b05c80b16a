"""The typed config tree. Keys are kebab-case, as in APIM; unknown keys are errors.

Policy statements stay raw here (`list[Any]`): each one is validated by its own policy's
config model when the runtime is built, so the config tree does not know any policy.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Annotated, Any, Literal
from urllib.parse import urlsplit

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, field_validator, model_validator

_SIZE = re.compile(r"^\s*(\d+)\s*(b|kb|kib|mb|mib|gb|gib)?\s*$", re.IGNORECASE)
_UNITS = {"b": 1, "kb": 1000, "kib": 1024, "mb": 10**6, "mib": 2**20, "gb": 10**9, "gib": 2**30}


def _parse_size(value: Any) -> Any:
    if isinstance(value, str):
        match = _SIZE.match(value)
        if not match:
            raise ValueError("expected a size such as 10485760, '512KiB' or '10MiB'")
        return int(match.group(1)) * _UNITS[(match.group(2) or "b").lower()]
    return value


def kebab(name: str) -> str:
    """Python field names to APIM-style keys: `tokens_per_minute` → `tokens-per-minute`."""
    return name.replace("_", "-")


ByteSize = Annotated[int, BeforeValidator(_parse_size), Field(gt=0)]
Seconds = Annotated[float, Field(gt=0, allow_inf_nan=False)]
Identifier = Annotated[str, Field(pattern=r"^[A-Za-z0-9][A-Za-z0-9_.-]*$", max_length=100)]


class Strict(BaseModel):
    model_config = ConfigDict(
        extra="forbid", alias_generator=kebab, populate_by_name=True, frozen=True
    )


class PolicySections(Strict):
    """A scope's policy document. A section left out inherits its parent's (like `<base/>`)."""

    inbound: list[Any] | None = None
    backend: list[Any] | None = None
    outbound: list[Any] | None = None
    on_error: list[Any] | None = None


class LimitsConfig(Strict):
    max_body_size: ByteSize = 10 * 2**20
    max_header_count: Annotated[int, Field(gt=0, le=10_000)] = 100
    max_header_bytes: ByteSize = 32 * 1024
    header_timeout: Seconds = 10.0
    body_timeout: Seconds = 30.0
    # Longest time a client may stop reading a response before it is disconnected.
    send_timeout: Seconds = 60.0


class GatewaySettings(Strict):
    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 8080
    gateway_id: str = "aigw"
    # Where this gateway runs (a region, a site): the `Location` metric dimension.
    location: str = "local"
    access_log: bool = True
    shutdown_grace_period: Seconds = 30.0
    # Seconds between SIGTERM and closing the listener, with /readyz already failing.
    drain_delay: Annotated[float, Field(ge=0, le=300)] = 0.0
    limits: LimitsConfig = LimitsConfig()
    # Seconds between checks of named-value files (0 = never; a reload still re-reads them),
    # and between fetches of Key Vault named values.
    named_values_refresh: Annotated[float, Field(ge=0, le=3600)] = 5.0
    key_vault_refresh: Annotated[float, Field(ge=1, le=86400)] = 300.0


class KeyVaultSecretConfig(Strict):
    """A secret in Azure Key Vault, read with the gateway's identity."""

    vault_url: Annotated[str, Field(pattern=r"^https://[^/?#\s]+/?$")]
    secret_name: Annotated[str, Field(pattern=r"^[0-9A-Za-z-]{1,127}$")]
    client_id: str | None = None  # a user-assigned identity


class NamedValueConfig(Strict):
    """Exactly one source: an inline `value`, an environment variable, a file or Key Vault."""

    value: str | None = None
    env: str | None = None
    file: str | None = None
    key_vault: KeyVaultSecretConfig | None = None  # always secret
    secret: bool = False

    @model_validator(mode="after")
    def _one_source(self) -> NamedValueConfig:
        given = [k for k in ("value", "env", "file", "key_vault") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                "a named value needs exactly one of 'value', 'env', 'file' or 'key-vault'"
            )
        if self.secret and self.value is not None:
            raise ValueError("secret named values must come from 'env' or 'file', not inline")
        return self


class TimeoutsConfig(Strict):
    connect: Seconds = 10.0  # TCP (and TLS) connect
    read: Seconds = 300.0  # longest silence while waiting for or reading the response
    pool: Seconds = 30.0  # longest wait for a free connection when max-connections are busy


class DemoBackendSettings(Strict):
    latency_ms: Annotated[float, Field(ge=0)] = 0.0
    chunk_delay_ms: Annotated[float, Field(ge=0)] = 0.0
    error_rate: Annotated[float, Field(ge=0, le=1)] = 0.0
    error_status: Annotated[int, Field(ge=400, le=599)] = 429
    retry_after_seconds: Annotated[int, Field(ge=0)] = 1
    seed: int = 0
    model: str = "demo-model"
    extra_models: tuple[str, ...] = ()


class StatusCodeRange(Strict):
    min: Annotated[int, Field(ge=100, le=599)]
    max: Annotated[int, Field(ge=100, le=599)]

    @model_validator(mode="before")
    @classmethod
    def _short_forms(cls, raw: Any) -> Any:
        """`429` or `"500-599"` for `{min, max}`."""
        if isinstance(raw, int) and not isinstance(raw, bool):
            return {"min": raw, "max": raw}
        if isinstance(raw, str):
            low, _, high = raw.partition("-")
            if low.strip().isdigit() and (not high or high.strip().isdigit()):
                return {"min": int(low), "max": int(high or low)}
        return raw

    @model_validator(mode="after")
    def _ordered(self) -> StatusCodeRange:
        if self.min > self.max:
            raise ValueError("'min' must not be above 'max'")
        return self


ErrorReason = Literal["connection-failure", "timeout", "stalled"]


class FailureCondition(Strict):
    """What counts as tripping: `count` failures, or `percentage` of at least
    `minimum-requests` requests, within `interval` seconds."""

    count: Annotated[int, Field(gt=0)] | None = None
    percentage: Annotated[int, Field(gt=0, le=100)] | None = None
    minimum_requests: Annotated[int, Field(gt=0)] = 10
    interval: Seconds = 10.0
    status_code_ranges: list[StatusCodeRange] = []
    error_reasons: list[ErrorReason] = []

    @model_validator(mode="after")
    def _one_threshold(self) -> FailureCondition:
        if (self.count is None) == (self.percentage is None):
            raise ValueError("give exactly one of 'count' or 'percentage'")
        if not self.status_code_ranges and not self.error_reasons:
            raise ValueError("give 'status-code-ranges', 'error-reasons', or both")
        return self


class BreakerRule(Strict):
    name: str = Field(min_length=1, max_length=100)
    failure_condition: FailureCondition
    trip_duration: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)] = 30.0
    # Stay open as long as the backend's Retry-After (or retry-after-ms, x-ratelimit-reset-*)
    # says, but never longer than `max-retry-after` (Azure quota replies can say a day).
    accept_retry_after: bool = False
    max_retry_after: Annotated[float, Field(gt=0, le=7 * 86400, allow_inf_nan=False)] = 300.0
    # Trial requests let through after the trip; all must succeed for the breaker to close.
    half_open_requests: Annotated[int, Field(gt=0, le=100)] = 1


class CircuitBreakerConfig(Strict):
    rules: list[BreakerRule] = Field(min_length=1)
    # Publish trips to the gateway's Redis (`counters.url`) and open on trips published by
    # other replicas; failures are still counted in each process.
    shared: bool = False


class HealthCheckConfig(Strict):
    """Active probes: GET `path` on the backend's URL every `interval` seconds."""

    path: str = Field("/", pattern=r"^/[A-Za-z0-9._~!$&'()*+,;=:@/%?-]*$", max_length=1000)
    interval: Annotated[float, Field(ge=0.05, le=3600)] = 10.0
    timeout: Annotated[float, Field(gt=0, le=300)] = 5.0
    unhealthy_threshold: Annotated[int, Field(ge=1, le=100)] = 3
    healthy_threshold: Annotated[int, Field(ge=1, le=100)] = 2
    expected_status: list[StatusCodeRange] = Field(
        default_factory=lambda: [StatusCodeRange(min=200, max=299)], min_length=1
    )


class PoolMember(Strict):
    backend: str
    priority: Annotated[int, Field(ge=1, le=100)] = 1
    weight: Annotated[int, Field(ge=1, le=1000)] = 1


class SessionAffinity(Strict):
    cookie: str = Field("aigw-affinity", pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$")


class PoolConfig(Strict):
    members: list[PoolMember] = Field(min_length=1, max_length=64)
    # Members tried for one request (429, 5xx, unreachable) before the answer goes back.
    max_attempts: Annotated[int, Field(ge=1, le=64)] | None = None
    # Longest wait for the first body byte of a member's answer before trying the next.
    first_byte_timeout: Seconds | None = None
    session_affinity: SessionAffinity | None = None


class IdentityConfig(Strict):
    """The gateway's own Microsoft Entra identity, for backend tokens (see aigw.identity)."""

    type: Literal["managed", "workload", "development"] = "managed"
    client_id: str | None = None  # a user-assigned identity / the workload's app registration
    # Workload identity only; each defaults to its usual environment variable
    # (AZURE_TENANT_ID, AZURE_FEDERATED_TOKEN_FILE, AZURE_AUTHORITY_HOST).
    tenant_id: str | None = None
    token_file: str | None = None
    authority_host: str | None = None


class ManagedIdentityCredentials(Strict):
    resource: str = Field(min_length=1)
    client_id: str | None = None


class ClientCredentials(Strict):
    """OAuth 2.0 client credentials against any identity provider."""

    token_url: Annotated[str, Field(pattern=r"^https?://[^/\s]+")]
    client_id: str = Field(min_length=1)
    client_secret: str | None = None  # must come from a secret named value
    client_assertion_file: str | None = None
    scope: str = ""

    @model_validator(mode="after")
    def _one_proof(self) -> ClientCredentials:
        if (self.client_secret is None) == (self.client_assertion_file is None):
            raise ValueError("give exactly one of 'client-secret' and 'client-assertion-file'")
        host = re.match(r"^http://(\[[^\]]+\]|[^/:]+)", self.token_url)
        if host and host.group(1) not in ("127.0.0.1", "localhost", "[::1]"):
            # The secret or assertion travels in the request: never in clear text.
            raise ValueError("'token-url' must be https:// (http:// only to this machine)")
        return self


class HeaderCredentials(Strict):
    name: Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=100)] = (
        "api-key"
    )
    value: str  # must come from a secret named value


class BackendCredentialsConfig(Strict):
    """How the gateway authenticates to a backend: exactly one of these."""

    managed_identity: ManagedIdentityCredentials | None = None
    client_credentials: ClientCredentials | None = None
    header: HeaderCredentials | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> BackendCredentialsConfig:
        given = [self.managed_identity, self.client_credentials, self.header]
        if sum(item is not None for item in given) != 1:
            raise ValueError(
                "give exactly one of 'managed-identity', 'client-credentials' and 'header'"
            )
        return self


class BackendConfig(Strict):
    type: Literal["http", "demo", "pool"] = "http"
    url: str | None = None
    description: str | None = None
    timeouts: TimeoutsConfig = TimeoutsConfig()
    max_connections: Annotated[int, Field(gt=0)] = 100
    max_connections_per_host: Annotated[int, Field(ge=0)] = 0
    demo: DemoBackendSettings = DemoBackendSettings()
    circuit_breaker: CircuitBreakerConfig | None = None
    health_check: HealthCheckConfig | None = None
    pool: PoolConfig | None = None
    credentials: BackendCredentialsConfig | None = None

    @field_validator("url")
    @classmethod
    def _url_without_query(cls, url: str | None) -> str | None:
        # Requests go to the URL's path only: a query or fragment would be silently dropped.
        if url is not None and ("?" in url or "#" in url):
            raise ValueError(
                "must not have a query string or fragment (requests are sent to its path "
                "only): send a key with 'credentials.header', or a query parameter with "
                "the set-query-parameter policy"
            )
        return url

    @model_validator(mode="after")
    def _url_for_http(self) -> BackendConfig:
        if self.type == "http":
            if not self.url:
                raise ValueError("an http backend needs a 'url'")
            if not re.match(r"^https?://[^/\s]+", self.url):
                raise ValueError("'url' must be an absolute http:// or https:// URL")
            parts = urlsplit(self.url)
            if parts.username is not None:
                raise ValueError("'url' must not hold a user or password: use 'credentials'")
            if parts.hostname is None:
                raise ValueError("'url' needs a host")
            try:
                parts.port  # noqa: B018 - raises for a port that is not a number in range
            except ValueError:
                raise ValueError("'url' has an invalid port") from None
        if (self.type == "pool") != (self.pool is not None):
            raise ValueError("a backend of type 'pool' needs 'pool' (and only a pool has it)")
        if self.type == "pool" and (self.url is not None or self.circuit_breaker is not None):
            # Its members have the URLs and the breakers; silently ignoring them would mislead.
            raise ValueError("a pool has no 'url' or 'circuit-breaker': its members do")
        if self.health_check is not None and self.type != "http":
            raise ValueError("only an http backend has a 'health-check'")
        if self.credentials is not None and self.type != "http":
            raise ValueError("only an http backend has 'credentials' (a pool's members do)")
        return self


class OperationConfig(Strict):
    """An operation of an `http` API, or per-operation policies of an LLM API."""

    display_name: str | None = None
    method: str | None = None
    url_template: str | None = None
    policies: PolicySections = PolicySections()


HeaderName = Annotated[str, Field(pattern=r"^[!#$%&'*+.^_`|~0-9A-Za-z-]+$", max_length=100)]
QueryName = Annotated[str, Field(pattern=r"^[A-Za-z0-9._~-]+$", max_length=100)]


class SubscriptionKeyNames(Strict):
    """APIM's `subscriptionKeyParameterNames`. `Authorization` means `Bearer <key>`."""

    header: HeaderName = "Ocp-Apim-Subscription-Key"
    query: QueryName = "subscription-key"


class ApiConfig(Strict):
    display_name: str | None = None
    type: Literal["azure-openai", "openai", "http"]
    path: str = ""
    backend: str | None = None
    subscription_required: bool = True
    subscription_key_parameter_names: SubscriptionKeyNames = SubscriptionKeyNames()
    operations: dict[Identifier, OperationConfig] = {}
    policies: PolicySections = PolicySections()

    @model_validator(mode="after")
    def _clean_path(self) -> ApiConfig:
        path = self.path.strip("/")
        if not re.fullmatch(r"[A-Za-z0-9._~!$&'()*+,;=:@/-]*", path) or "//" in path:
            raise ValueError("'path' must be a plain URL path prefix such as 'openai'")
        object.__setattr__(self, "path", path)
        return self


class ProductConfig(Strict):
    display_name: str | None = None
    description: str | None = None
    state: Literal["published", "not-published"] = "published"
    # False makes an open product: calls without a key run in its context.
    subscription_required: bool = True
    apis: list[str] = []
    policies: PolicySections = PolicySections()


def _database_url(url: str) -> str:
    """A store's `sqlite:PATH`, or a PostgreSQL URL the driver will read as it is written."""
    if url.startswith("sqlite:"):
        return url
    if not url.startswith(("postgresql://", "postgres://")):
        raise ValueError("must start with 'sqlite:' or 'postgresql://'")
    # The stores check with the same rules before connecting. The message never quotes the
    # URL: where it is misread, any piece of it may be part of the password.
    from aigw.postgresdb import url_problem

    problem = url_problem(url)
    if problem is not None:
        raise ValueError(problem)
    return url


class StoreConfig(Strict):
    """Where subscriptions live: `sqlite:PATH` (relative to the config file) or
    `postgresql://user@host:port/db` (shared by replicas)."""

    url: str = "sqlite:aigw.db"
    # How often each process picks up changes made through other processes or replicas.
    refresh_interval: Annotated[float, Field(gt=0, le=60)] = 1.0

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str) -> str:
        return _database_url(url)


class CountersConfig(Strict):
    """Where limit counters live: in this process (default), or in Redis, shared by every
    worker and replica (`redis://[:password@]host:6379/0`, `rediss://` for TLS)."""

    url: str | None = None
    timeout: Annotated[float, Field(gt=0, le=10)] = 0.5
    # How often each process reads the breaker state other replicas published
    # (backends with `circuit-breaker.shared`).
    breaker_poll_interval: Annotated[float, Field(ge=0.05, le=60)] = 0.5

    @field_validator("url")
    @classmethod
    def _redis_url(cls, url: str | None) -> str | None:
        if url is None:
            return None
        if not url.startswith(("redis://", "rediss://")):
            raise ValueError("must start with 'redis://' or 'rediss://'")
        # Counters and shared breakers connect with what this reads: anything in the URL
        # they could not honour is refused now, whichever of them the config uses.
        from aigw.limits.redis_connection import RedisAddress

        RedisAddress.parse(url)
        return url


class AdminConfig(Strict):
    """The admin API's own listener; it runs only when `token` is set (from a secret)."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9080
    token: str | None = None


class OperationsConfig(Strict):
    """The operations listener: `/metrics` (Prometheus), `/healthz` and `/readyz`, apart from
    the API traffic. Off unless configured."""

    host: str = "127.0.0.1"
    port: Annotated[int, Field(ge=0, le=65535)] = 9464


class MetricsConfig(Strict):
    # The cardinality guard: a metric gets at most this many label sets per worker process;
    # further ones are counted under the label value `other` (and logged, and counted).
    max_series_per_metric: Annotated[int, Field(ge=10, le=1_000_000)] = 2000


class OtlpConfig(Strict):
    """OpenTelemetry export (OTLP over HTTP, protobuf) of metrics and traces."""

    endpoint: Annotated[str, Field(pattern=r"^https?://[^\s/?#]+(/[^\s?#]*)?$")]
    # Sent with every export, e.g. an API key; values may be secret named values.
    headers: dict[HeaderName, str] = {}
    metrics: bool = True
    traces: bool = True
    export_interval: Annotated[float, Field(ge=0.1, le=3600)] = 10.0
    timeout: Annotated[float, Field(gt=0, le=300)] = 10.0
    service_name: str = Field("aigw", min_length=1, max_length=200)
    # The share of requests traced (0..1); metrics always count every request.
    trace_sample_ratio: Annotated[float, Field(ge=0, le=1)] = 1.0


Price = Annotated[Decimal, Field(ge=0, le=1_000_000, allow_inf_nan=False)]


class PriceConfig(Strict):
    """What a model costs per one million tokens."""

    input: Price
    cached_input: Price | None = None  # prompt tokens from the provider's cache; default: input
    output: Price = Decimal(0)
    currency: Annotated[str, Field(pattern=r"^[A-Z]{3}$")] = "USD"


class LedgerConfig(Strict):
    """The usage ledger: one record per model request, written in batches off the hot path."""

    enabled: bool = True
    # `sqlite:PATH` or `postgresql://…`; default: the subscription store's `store.url`.
    url: str | None = None
    # Small batches keep each write short (the event loop shares the interpreter with it).
    batch_size: Annotated[int, Field(ge=1, le=10_000)] = 100
    flush_interval: Annotated[float, Field(gt=0, le=60)] = 1.0
    # Records held while the database is unreachable; beyond this the oldest are dropped
    # (logged and counted in `aigw_ledger_dropped_records_total`).
    max_buffered: Annotated[int, Field(ge=100, le=10_000_000)] = 100_000

    @field_validator("url")
    @classmethod
    def _usable_url(cls, url: str | None) -> str | None:
        return None if url is None else _database_url(url)


class UsageConfig(Strict):
    ledger: LedgerConfig = LedgerConfig()
    # Counting a response that came without usage (a client that left mid-stream, a backend
    # that reports none) needs the tokenizer. Loading it pauses the worker ~0.5 s and takes
    # ~65 MB: by default that happens the first time it is needed; true loads it at start,
    # before the gateway reports ready (token limits always do).
    preload_tokenizer: bool = False
    # Ask backends for usage in streams the client did not ask it for
    # (`stream_options.include_usage`; the extra event is taken out again). false: such
    # streams are counted by the gateway instead, for backends that refuse the option.
    request_stream_usage: bool = True
    # By model or deployment name, as requests name them (see README: Prices).
    prices: dict[Annotated[str, Field(min_length=1, max_length=200)], PriceConfig] = {}


class GatewayConfig(Strict):
    gateway: GatewaySettings = GatewaySettings()
    store: StoreConfig = StoreConfig()
    counters: CountersConfig = CountersConfig()
    admin: AdminConfig = AdminConfig()
    operations: OperationsConfig | None = None
    metrics: MetricsConfig = MetricsConfig()
    otlp: OtlpConfig | None = None
    usage: UsageConfig = UsageConfig()
    named_values: dict[Identifier, NamedValueConfig] = {}
    identity: IdentityConfig = IdentityConfig()
    backends: dict[Identifier, BackendConfig] = {}
    policies: PolicySections = PolicySections()
    products: dict[Identifier, ProductConfig] = {}
    apis: dict[Identifier, ApiConfig] = {}
