"""Fixtures for the end-to-end tests: one real gateway process per module, SDK clients.

A module changes the gateway it gets by overriding the module-scoped `gateway_config` fixture.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest

from tests.e2e.helpers import RecordingBackend, base_config, recording_backend
from tests.support import DemoBackend, Gateway

AZURE_API_VERSION = "2024-10-21"


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend) -> dict[str, Any]:
    return base_config(demo_backend.url)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, gateway_config: dict[str, Any]
) -> Iterator[Gateway]:
    gw = Gateway(Path(tmp_path_factory.mktemp("gateway")), gateway_config)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def openai_client(gateway: Gateway) -> Iterator[openai.OpenAI]:
    client = openai.OpenAI(base_url=gateway.url + "/v1", api_key="x", max_retries=0)
    yield client
    client.close()


@pytest.fixture(scope="module")
def azure_client(gateway: Gateway) -> Iterator[openai.AzureOpenAI]:
    client = openai.AzureOpenAI(
        azure_endpoint=gateway.url, api_key="x", api_version=AZURE_API_VERSION, max_retries=0
    )
    yield client
    client.close()


@pytest.fixture(scope="module")
def echo_backend() -> Iterator[RecordingBackend]:
    yield from recording_backend("echo")


@pytest.fixture(scope="module")
def http(gateway: Gateway) -> Iterator[httpx.Client]:
    """A plain HTTP client for the module's gateway."""
    with httpx.Client(base_url=gateway.url, timeout=10) as client:
        yield client
