"""The seam between the pipeline's terminal step and whatever answers the request.

A backend turns the (policy-edited) request in the context into a response whose body is
streamed. Pools, circuit breakers and retries are backends too: they wrap members behind
this same interface, so the pipeline never changes when they arrive.
"""

from __future__ import annotations

from typing import Any, Protocol, runtime_checkable

from aigw.context import RequestContext, Response


class Backend(Protocol):
    id: str

    async def send(self, ctx: RequestContext) -> Response:
        """Send the request; raise a GatewayError (502/504 …) if no response head arrives."""
        ...

    async def start(self) -> None:
        """Open resources (connection pools) inside the serving event loop."""
        ...

    async def close(self) -> None: ...


@runtime_checkable
class Inspectable(Protocol):
    """A backend that can describe its live state (breaker, in-flight) to the admin API."""

    def status(self) -> dict[str, Any]: ...
