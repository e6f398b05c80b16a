"""Backends are built from config by type; the rest of the gateway sees only `Backend`."""

from __future__ import annotations

from collections.abc import Mapping

from aigw.backends.base import Backend
from aigw.backends.breaker import CircuitBreaker
from aigw.backends.guarded import GuardedBackend
from aigw.backends.http import HttpBackend
from aigw.backends.inprocess import InProcessBackend
from aigw.backends.pool import PoolBackend
from aigw.clock import Clock
from aigw.config.model import BackendConfig


def build_backend(backend_id: str, config: BackendConfig) -> Backend:
    """One single (non-pool) backend, without its breaker."""
    if config.type == "demo":
        from aigw.demo import DemoSettings, create_demo_app

        settings = DemoSettings(**config.demo.model_dump())
        return InProcessBackend(backend_id, create_demo_app(settings), config.timeouts.read)
    return HttpBackend(backend_id, config)


def build_backends(configs: Mapping[str, BackendConfig], clock: Clock) -> dict[str, Backend]:
    """Every backend of a config: singles behind their breakers, then the pools over them
    (references were checked by the loader: members exist and are not pools)."""
    singles: dict[str, GuardedBackend] = {}
    for backend_id, config in configs.items():
        if config.type == "pool":
            continue
        rules = config.circuit_breaker.rules if config.circuit_breaker else []
        singles[backend_id] = GuardedBackend(
            build_backend(backend_id, config),
            CircuitBreaker(backend_id, rules, clock),
            clock,
            kind=config.type,
            url=config.url,
        )
    backends: dict[str, Backend] = {}
    for backend_id, config in configs.items():
        if config.pool is not None:
            members = [singles[member.backend] for member in config.pool.members]
            backends[backend_id] = PoolBackend(backend_id, config.pool, members, clock)
        else:
            backends[backend_id] = singles[backend_id]
    return backends
