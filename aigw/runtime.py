"""Config → runtime: everything compiled once, then shared read-only by all requests.

`build_runtime` is the only place that turns config into live objects. It either returns a
complete runtime or raises a ConfigError listing every problem, so a reload can build the new
runtime first and swap only when it is whole.
"""

from __future__ import annotations

from dataclasses import dataclass

import aigw.policies.builtin  # noqa: F401 - registers the built-in policies
from aigw.backends.base import Backend
from aigw.backends.factory import build_backend
from aigw.catalog import BUILTIN_OPERATIONS, DEPLOYMENT_ID, OperationSpec, builtin_operation_ids
from aigw.clock import SYSTEM_CLOCK, Clock
from aigw.config.errors import IssueCollector
from aigw.config.loader import LoadedConfig, check_references
from aigw.config.model import ApiConfig, GatewayConfig, PolicySections
from aigw.context import ApiInfo, OperationInfo, RequestContext, Response
from aigw.errors import BadRequest, GatewayError
from aigw.pipeline.chain import Chain, ScopeStatements, compose
from aigw.policies.base import SECTIONS, Policy
from aigw.policies.build import BuildContext
from aigw.routing import Route, Router, compile_template
from aigw.urlpath import encoded_has_dot_segment


@dataclass(frozen=True, slots=True)
class OperationTarget:
    """What a matched route needs at request time."""

    chains: dict[str | None, Chain]  # by product id; None = no product context
    default_backend: str | None

    def chain_for(self, product_id: str | None) -> Chain:
        return self.chains.get(product_id) or self.chains[None]


@dataclass
class Services:
    """Long-lived services handed to policies and the terminal step."""

    backends: dict[str, Backend]
    gateway_id: str
    clock: Clock = SYSTEM_CLOCK


@dataclass
class Runtime:
    loaded: LoadedConfig
    router: Router
    services: Services
    in_flight: int = 0

    @property
    def config(self) -> GatewayConfig:
        return self.loaded.config

    async def start(self) -> None:
        for backend in self.services.backends.values():
            await backend.start()

    async def close(self) -> None:
        for backend in self.services.backends.values():
            await backend.close()

    async def forward(self, ctx: RequestContext) -> Response:
        """The terminal step: send the request to the chosen backend."""
        backend_id = ctx.backend_id
        if backend_id is None:
            raise GatewayError(
                "No backend is configured for this API", reason="BackendNotConfigured"
            )
        backend = self.services.backends.get(backend_id)
        if backend is None:
            raise GatewayError("Backend not found", reason="BackendNotFound")
        if encoded_has_dot_segment(ctx.request.backend_path):
            # A rewritten path (an expression fed by the request) must not climb out either.
            raise BadRequest(
                "Request path must not contain '.' or '..' segments", reason="InvalidPath"
            )
        return await backend.send(ctx)


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


def build_runtime(loaded: LoadedConfig) -> Runtime:
    config = loaded.config
    issues = IssueCollector()
    check_references(config, issues)
    build = BuildContext(issues=issues, backend_ids=frozenset(config.backends))
    global_scope = _scope(build, config.policies, "policies")
    product_scopes = {
        pid: _scope(build, product.policies, f"products.{pid}.policies")
        for pid, product in config.products.items()
    }
    routes: list[Route] = []
    for api_id, api in config.apis.items():
        api_scope = _scope(build, api.policies, f"apis.{api_id}.policies")
        api_info = ApiInfo(api_id, api.display_name or api_id, api.path, api.type)
        products = [pid for pid, p in config.products.items() if api_id in p.apis]
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
            for pid in products:
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
                    target=OperationTarget(chains, api.backend),
                )
            )
    issues.raise_if_any(loaded.secrets)
    backends = {bid: build_backend(bid, b) for bid, b in config.backends.items()}
    services = Services(backends=backends, gateway_id=config.gateway.gateway_id)
    return Runtime(loaded=loaded, router=Router(routes), services=services)
