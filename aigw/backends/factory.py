"""Backends are built from config by type; the rest of the gateway sees only `Backend`."""

from __future__ import annotations

from aigw.backends.base import Backend
from aigw.backends.http import HttpBackend
from aigw.backends.inprocess import InProcessBackend
from aigw.config.model import BackendConfig


def build_backend(backend_id: str, config: BackendConfig) -> Backend:
    if config.type == "demo":
        from aigw.demo import DemoSettings, create_demo_app

        settings = DemoSettings(**config.demo.model_dump())
        return InProcessBackend(backend_id, create_demo_app(settings), config.timeouts.read)
    return HttpBackend(backend_id, config)
