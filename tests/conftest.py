from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import DemoBackend


@pytest.fixture(scope="session")
def demo_backend(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DemoBackend]:
    """One demo model server for the whole session (stateless, so tests can share it)."""
    backend = DemoBackend(Path(tmp_path_factory.mktemp("demo")))
    yield backend
    backend.stop()
