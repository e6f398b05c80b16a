"""Config → runtime: everything compiled once, then shared read-only by all requests.

`build_runtime` is the only place that turns config into live objects. It either returns a
complete runtime or raises a ConfigError listing every problem, so a reload can build the new
runtime first and swap only when it is whole.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import aigw.policies.builtin  # noqa: F401 - registers the built-in policies
from aigw.backends.base import Backend
from aigw.backends.factory import build_backends
from aigw.backends.retry_plan import send_planned
from aigw.backends.shared import BreakerSync
from aigw.catalog import BUILTIN_OPERATIONS, DEPLOYMENT_ID, OperationSpec, builtin_operation_ids
from aigw.clock import SYSTEM_CLOCK, Clock
from aigw.config.errors import IssueCollector
from aigw.config.loader import LoadedConfig, check_references
from aigw.config.model import ApiConfig, GatewayConfig, PolicySections
from aigw.context import ApiInfo, OperationInfo, ProductInfo, RequestContext, Response
from aigw.errors import BadRequest, GatewayError
from aigw.pipeline.chain import Chain, ScopeStatements, compose
from aigw.policies.base import SECTIONS, Policy
from aigw.policies.build import BuildContext, Resource
from aigw.routing import Route, Router, compile_template
from aigw.subscriptions.directory import SubscriptionDirectory, SubscriptionIndex
from aigw.subscriptions.gate import KeyLocation, SubscriptionGate
from aigw.subscriptions.service import ProductEntry, SubscriptionService
from aigw.subscriptions.store import SubscriptionStore, open_store
from aigw.telemetry.hub import Telemetry
from aigw.urlpath import encoded_path_problem

if TYPE_CHECKING:
    from aigw.ledger.writer import LedgerWriter
    from aigw.telemetry.prometheus import PrometheusMetrics


@dataclass(frozen=True, slots=True)
class OperationTarget:
    """What a matched route needs at request time."""

    chains: dict[str | None, Chain]  # by product id; None = no product context
    default_backend: str | None
    gate: SubscriptionGate

    def chain_for(self, product_id: str | None) -> Chain:
        return self.chains.get(product_id) or self.chains[None]


@dataclass
class Services:
    """Long-lived services handed to policies and the terminal step."""

    backends: dict[str, Backend]
    gateway_id: str
    subscriptions: SubscriptionDirectory
    products: dict[str, ProductEntry] = field(default_factory=dict)
    api_ids: frozenset[str] = frozenset()
    clock: Clock = SYSTEM_CLOCK
    location: str = "local"
    request_stream_usage: bool = True  # see UsageConfig
    telemetry: Telemetry = field(default_factory=Telemetry)
    # The usage ledger's writer (its store answers usage reports), when the ledger is on.
    ledger: LedgerWriter | None = None

    def subscription_service(self) -> SubscriptionService:
        """Changes made through it are enforced by this process at once."""
        return SubscriptionService(
            self.subscriptions.store,
            self.products,
            self.api_ids,
            self.clock,
            on_change=lambda changed: self.subscriptions.index.apply([changed]),
        )


@dataclass
class Runtime:
    loaded: LoadedConfig
    router: Router
    services: Services
    resources: list[Resource] = field(default_factory=list)
    in_flight: int = 0

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    @property
    def counts_in_process(self) -> bool:
        """Whether limits keep their counters in this process (no shared Redis store)."""
        from aigw.limits.memory_store import MemoryCounterStore

        return any(isinstance(resource, MemoryCounterStore) for resource in self.resources)

    def keep_counters(self, previous: Runtime) -> None:
        """Carry on with `previous`'s in-process counters (a reload)."""
        from aigw.limits.memory_store import MemoryCounterStore

        stores = [r for r in self.resources if isinstance(r, MemoryCounterStore)]
        earlier = [r for r in previous.resources if isinstance(r, MemoryCounterStore)]
        if stores and earlier:
            stores[0].adopt(earlier[0])

    def keep_ledger(self, previous: Runtime) -> None:
        """Take over `previous`'s unwritten usage records when both write the same ledger
        (a reload): during a database outage they would otherwise be lost."""
        from aigw.ledger.writer import ledger_url

        old, new = previous.services.ledger, self.services.ledger
        same = ledger_url(previous.config) == ledger_url(self.config)
        if old is not None and new is not None and same:
            old.hand_over_to(new)

    async def start(self) -> None:
        prometheus = self.services.telemetry.prometheus
        if prometheus is not None:  # process-wide: set by the runtime that takes over
            prometheus.max_series = self.config.metrics.max_series_per_metric
        await self.services.subscriptions.start()
        for backend in self.services.backends.values():
            await backend.start()
        for resource in self.resources:
            await resource.start()

    async def close(self) -> None:
        for resource in reversed(self.resources):  # what was built on others closes first
            await resource.close()
        for backend in self.services.backends.values():
            await backend.close()
        await self.services.subscriptions.close()

    async def forward(self, ctx: RequestContext) -> Response:
        """The terminal step: send the request to the chosen backend (again, if a `retry`
        in the backend section planned it and the answer calls for it)."""
        backend_id = ctx.backend_id
        if backend_id is None:
            raise GatewayError(
                "No backend is configured for this API", reason="BackendNotConfigured"
            )
        backend = self.services.backends.get(backend_id)
        if backend is None:
            raise GatewayError("Backend not found", reason="BackendNotFound")
        problem = encoded_path_problem(ctx.request.backend_path)
        if problem is not None:
            # A rewritten path (an expression fed by the request) is held to the same rule.
            raise BadRequest(problem, reason="InvalidPath")
        return await send_planned(backend.send, ctx)


def _scope(build: BuildContext, sections: PolicySections, path: str) -> ScopeStatements:
    built: dict[str, list[Policy | str] | None] = {}
    for section in SECTIONS:
        raw = getattr(sections, section.replace("-", "_"))
        if raw is None:
            built[section] = None
            continue
        build.section = section
        built[section] = build.statements(raw, f"{path}.{section}", allow_base=True)
    return built


def _operation_specs(api_id: str, api: ApiConfig, issues: IssueCollector) -> list[OperationSpec]:
    if api.type == "http":
        return [
            OperationSpec(op_id, (op.method or "*").upper(), op.url_template or "/", False)
            for op_id, op in api.operations.items()
        ]
    known = builtin_operation_ids(api.type)
    for op_id in api.operations:
        if op_id not in known:
            issues.add(
                f"apis.{api_id}.operations.{op_id}",
                f"unknown operation for a '{api.type}' API (known: {', '.join(sorted(known))})",
            )
    return list(BUILTIN_OPERATIONS[api.type])


def _product_entries(config: GatewayConfig) -> dict[str, ProductEntry]:
    return {
        pid: ProductEntry(
            pid,
            product.display_name or pid,
            product.description,
            product.state,
            product.subscription_required,
            tuple(product.apis),
        )
        for pid, product in config.products.items()
    }


def _gate(
    api_id: str, api: ApiConfig, products: dict[str, ProductEntry], index: SubscriptionIndex
) -> SubscriptionGate:
    containing = {
        pid: ProductInfo(pid, p.display_name, p.state, p.subscription_required)
        for pid, p in products.items()
        if api_id in p.apis
    }
    open_product = next(
        (
            info
            for info in containing.values()
            if not info.subscription_required and info.state == "published"
        ),
        None,
    )
    names = api.subscription_key_parameter_names
    return SubscriptionGate(
        api_id=api_id,
        api_path=api.path,
        required=api.subscription_required,
        location=KeyLocation(names.header, names.query),
        open_product=open_product,
        products=containing,
        index=index,
    )


def _check_credentials(loaded: LoadedConfig, issues: IssueCollector) -> None:
    """Backend keys and client secrets come from secret named values, never inline."""
    for backend_id, backend in loaded.config.backends.items():
        credentials = backend.credentials
        if credentials is None:
            continue
        path = f"backends.{backend_id}.credentials"
        header = credentials.header
        # The value may wrap the secret ("Bearer {{key}}"), but must include one.
        if header is not None and not any(secret in header.value for secret in loaded.secrets):
            issues.add(
                f"{path}.header.value", "must come from a secret named value, e.g. '{{api-key}}'"
            )
        client = credentials.client_credentials
        secret = client.client_secret if client is not None else None
        if secret is not None and secret not in loaded.secrets:
            issues.add(
                f"{path}.client-credentials.client-secret",
                "must come from a secret named value, e.g. '{{client-secret}}'",
            )


def _check_admin(loaded: LoadedConfig, issues: IssueCollector) -> None:
    token = loaded.config.admin.token
    if token is None:
        return
    if token not in loaded.secrets:
        issues.add("admin.token", "must come from a secret named value, e.g. '{{admin-token}}'")
    elif len(token) < 16:
        issues.add("admin.token", "must be at least 16 characters long")


def _store(loaded: LoadedConfig, issues: IssueCollector) -> SubscriptionStore | None:
    try:
        return open_store(loaded.config.store.url, _base_dir(loaded))
    except ValueError as exc:  # e.g. a PostgreSQL schema name it would have to quote
        issues.add("store.url", str(exc))
        return None


def _base_dir(loaded: LoadedConfig) -> Path:
    """Where relative SQLite paths point: next to the config file (or the working dir)."""
    return Path.cwd() if loaded.source == "<string>" else Path(loaded.source).parent


def build_runtime(loaded: LoadedConfig, metrics: PrometheusMetrics | None = None) -> Runtime:
    """The runtime for `loaded`; `metrics` is the process's Prometheus registry (kept across
    reloads), None where nothing serves /metrics (validate, tests)."""
    config = loaded.config
    issues = IssueCollector()
    check_references(config, issues)
    _check_admin(loaded, issues)
    _check_credentials(loaded, issues)
    products = _product_entries(config)
    store = _store(loaded, issues)
    index = SubscriptionIndex()
    build = BuildContext(issues=issues, backend_ids=frozenset(config.backends), settings=config)
    global_scope = _scope(build, config.policies, "policies")
    product_scopes = {
        pid: _scope(build, product.policies, f"products.{pid}.policies")
        for pid, product in config.products.items()
    }
    routes: list[Route] = []
    for api_id, api in config.apis.items():
        api_scope = _scope(build, api.policies, f"apis.{api_id}.policies")
        api_info = ApiInfo(api_id, api.display_name or api_id, api.path, api.type)
        products_of_api = [pid for pid, p in config.products.items() if api_id in p.apis]
        gate = _gate(api_id, api, products, index)
        op_scopes: dict[str, ScopeStatements] = {}
        for spec in _operation_specs(api_id, api, issues):
            op_config = api.operations.get(spec.id)
            if spec.id not in op_scopes:
                op_scopes[spec.id] = (
                    _scope(
                        build, op_config.policies, f"apis.{api_id}.operations.{spec.id}.policies"
                    )
                    if op_config
                    else {}
                )
            chains: dict[str | None, Chain] = {
                None: compose([global_scope, api_scope, op_scopes[spec.id]])
            }
            for pid in products_of_api:
                chains[pid] = compose(
                    [global_scope, product_scopes[pid], api_scope, op_scopes[spec.id]]
                )
            name = (op_config.display_name if op_config else None) or spec.id
            segment = "[^/]+" if api.type == "http" else DEPLOYMENT_ID
            pattern, params = compile_template(
                spec.url_template,
                segment,
                issues=issues,
                path=f"apis.{api_id}.operations.{spec.id}.url-template",
            )
            routes.append(
                Route(
                    api=api_info,
                    operation=OperationInfo(spec.id, name, spec.method, spec.url_template),
                    method=spec.method,
                    pattern=pattern,
                    param_names=params,
                    json_body=spec.json_body,
                    target=OperationTarget(chains, api.backend, gate),
                )
            )
    issues.raise_if_any(loaded.secrets)
    assert store is not None  # a refused URL is an issue, raised just above
    directory = SubscriptionDirectory(store, config.store.refresh_interval, index)
    return _assemble(loaded, build, Router(routes), directory, products, metrics)


def _assemble(
    loaded: LoadedConfig,
    build: BuildContext,
    router: Router,
    directory: SubscriptionDirectory,
    products: dict[str, ProductEntry],
    metrics: PrometheusMetrics | None,
) -> Runtime:
    """The live parts around the compiled routes: backends, telemetry, services."""
    config = loaded.config
    sync = _breaker_sync(config)
    backends = build_backends(config.backends, SYSTEM_CLOCK, sync, config.identity, build.shared)
    telemetry, telemetry_resources = _telemetry(loaded, build, metrics)
    services = Services(
        backends=backends,
        gateway_id=config.gateway.gateway_id,
        subscriptions=directory,
        products=products,
        api_ids=frozenset(config.apis),
        location=config.gateway.location,
        request_stream_usage=config.usage.request_stream_usage,
        telemetry=telemetry,
        ledger=telemetry.ledger,
    )
    return Runtime(
        loaded=loaded,
        router=router,
        services=services,
        resources=list(build.resources.values())
        + ([sync] if sync is not None else [])
        + telemetry_resources,
    )


def _telemetry(
    loaded: LoadedConfig, build: BuildContext, metrics: PrometheusMetrics | None
) -> tuple[Telemetry, list[Resource]]:
    """Prometheus (process-wide), the OTLP exporter and the usage ledger (this runtime's;
    started after, and closed before, everything the policies use)."""
    from aigw.identity.cache import TokenCache
    from aigw.ledger.writer import build_ledger
    from aigw.policies.limit_support import lazy_token_counter

    config = loaded.config
    otlp = None
    if config.otlp is not None:
        from aigw.telemetry.otlp import OtlpExporter

        otlp = OtlpExporter(config.otlp, config.gateway.gateway_id)
    telemetry = Telemetry(metrics, otlp)
    try:
        ledger = build_ledger(config, _base_dir(loaded), telemetry)
    except ValueError as exc:  # e.g. a PostgreSQL schema name it would have to quote
        issues = IssueCollector()
        issues.add("usage.ledger.url", str(exc))
        issues.raise_if_any(loaded.secrets)
        raise

    # Counting a response without usage needs a tokenizer (one shared with the policies).
    counter = lazy_token_counter(build) if ledger is not None else None
    resources: list[Resource] = [r for r in (otlp, ledger) if r is not None]
    for resource in build.resources.values():
        if isinstance(resource, TokenCache):  # backend tokens acquired count as metrics
            resource.events = telemetry
    if ledger is not None:
        telemetry.add_ledger(ledger, counter)
    return telemetry, resources


def _breaker_sync(config: GatewayConfig) -> BreakerSync | None:
    """The task sharing breaker state through Redis, when a backend asks for it."""
    url = config.counters.url
    if url is None or not any(
        backend.circuit_breaker is not None and backend.circuit_breaker.shared
        for backend in config.backends.values()
    ):
        return None
    from aigw.backends.redis_shared import RedisStateStore

    store = RedisStateStore(url, timeout=config.counters.timeout)
    return BreakerSync(store, SYSTEM_CLOCK, config.counters.breaker_poll_interval)
