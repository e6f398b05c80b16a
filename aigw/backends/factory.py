"""Backends are built from config by type; the rest of the gateway sees only `Backend`."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING

from aigw.backends.base import Backend
from aigw.backends.breaker import CircuitBreaker
from aigw.backends.guarded import GuardedBackend
from aigw.backends.health import HealthCheck
from aigw.backends.http import HttpBackend
from aigw.backends.inprocess import InProcessBackend
from aigw.backends.pool import PoolBackend
from aigw.backends.shared import BreakerSync
from aigw.clock import Clock
from aigw.config.model import BackendConfig, IdentityConfig

if TYPE_CHECKING:
    from aigw.identity import Shared


def build_backend(
    backend_id: str,
    config: BackendConfig,
    identity: IdentityConfig | None = None,
    caches: Shared | None = None,
) -> Backend:
    """One single (non-pool) backend, without its breaker. Token caches for its credentials
    come from `caches` (the runtime's shared resources), so equal ones are shared."""
    if config.type == "demo":
        from aigw.demo import DemoSettings, create_demo_app

        settings = DemoSettings(**config.demo.model_dump())
        return InProcessBackend(backend_id, create_demo_app(settings), config.timeouts.read)
    credential = None
    if config.credentials is not None:
        from aigw.backends.credentials import build_credential

        resources: dict[object, object] = {}
        credential = build_credential(
            config.credentials,
            identity or IdentityConfig(),
            caches or (lambda key, create: resources.setdefault(key, create())),
        )
    return HttpBackend(backend_id, config, credential)


def build_backends(
    configs: Mapping[str, BackendConfig],
    clock: Clock,
    sync: BreakerSync | None = None,
    identity: IdentityConfig | None = None,
    caches: Shared | None = None,
) -> dict[str, Backend]:
    """Every backend of a config: singles behind their breakers, then the pools over them
    (references were checked by the loader: members exist and are not pools). Breakers
    with `shared` join `sync` (the loader made sure there is one)."""
    singles: dict[str, GuardedBackend] = {}
    for backend_id, config in configs.items():
        if config.type == "pool":
            continue
        settings = config.circuit_breaker
        breaker = CircuitBreaker(backend_id, settings.rules if settings else [], clock)
        backend = build_backend(backend_id, config, identity, caches)
        health = None
        if config.health_check is not None and isinstance(backend, HttpBackend):
            health = HealthCheck(backend_id, config.health_check, breaker, backend.probe, clock)
        shared = None
        if settings is not None and settings.shared and sync is not None:
            shared = sync.register(backend_id, config.url, breaker)
        singles[backend_id] = GuardedBackend(
            backend, breaker, clock, kind=config.type, url=config.url, health=health, shared=shared
        )
    backends: dict[str, Backend] = {}
    for backend_id, config in configs.items():
        if config.pool is not None:
            members = [singles[member.backend] for member in config.pool.members]
            backends[backend_id] = PoolBackend(backend_id, config.pool, members, clock)
        else:
            backends[backend_id] = singles[backend_id]
    return backends
