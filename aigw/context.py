"""Per-request state: the only mutable object a policy touches.

A `RequestContext` is created per request by the app and dropped when the response is done.
Everything long-lived (compiled config, clients, stores) lives in the runtime and is reached
through `ctx.services`, never through module globals.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import parse_qsl, quote, urlencode

from aigw.clock import SYSTEM_CLOCK, Clock
from aigw.errors import GatewayError
from aigw.headers import Headers
from aigw.jsonbody import parse_strict_json, serialize_json

if TYPE_CHECKING:
    from aigw.jwt.validator import Jwt
    from aigw.policies.base import Policy
    from aigw.telemetry.record import StepTiming
    from aigw.usage.meter import UsageMeter


@dataclass(frozen=True, slots=True)
class ApiInfo:
    id: str
    name: str
    path: str
    type: str


@dataclass(frozen=True, slots=True)
class OperationInfo:
    id: str
    name: str
    method: str
    url_template: str


@dataclass(frozen=True, slots=True)
class ProductInfo:
    id: str
    name: str
    state: str = "published"
    subscription_required: bool = True


@dataclass(frozen=True, slots=True)
class SubscriptionInfo:
    id: str
    name: str
    key: str | None = field(default=None, repr=False)


@dataclass(frozen=True, slots=True)
class UserInfo:
    id: str
    email: str | None = None
    first_name: str | None = None
    last_name: str | None = None


@dataclass(frozen=True, slots=True)
class LastError:
    """What APIM exposes as `context.LastError`."""

    source: str
    reason: str
    message: str
    section: str
    scope: str | None = None
    policy_id: str | None = None
    status_code: int = 500

    @classmethod
    def from_error(cls, exc: GatewayError, section: str) -> LastError:
        return cls(
            source=exc.source,
            reason=exc.reason,
            message=exc.message,
            section=section,
            policy_id=exc.policy_id,
            status_code=exc.status_code,
        )


class RequestView:
    """The request as the backend will receive it; policies edit it in place."""

    __slots__ = (
        "_body",
        "_json",
        "_json_loaded",
        "_json_modified",
        "_query",
        "_query_as_parsed",
        "_raw_query",
        "backend_path",
        "client_ip",
        "headers",
        "host",
        "matched_parameters",
        "method",
        "original_path",
        "path",
        "scheme",
    )

    def __init__(
        self,
        *,
        method: str,
        scheme: str,
        host: str,
        path: str,
        query_string: str,
        headers: Headers,
        client_ip: str,
        body: bytes = b"",
    ) -> None:
        self.method = method
        self.scheme = scheme
        self.host = host
        self.path = path
        self.original_path = path
        # The part of the path after the API prefix, percent-encoded as it is sent; forwarded
        # after the backend's base URL. `path` is the decoded path used for routing.
        self.backend_path = path
        # The query is forwarded exactly as the client sent it unless a policy changes it.
        self._raw_query = query_string
        self._query: list[tuple[str, str]] | None = None
        self._query_as_parsed: list[tuple[str, str]] | None = None
        self.headers = headers
        self.client_ip = client_ip
        self.matched_parameters: dict[str, str] = {}
        self._body = body
        self._json: Any = None
        self._json_loaded = False
        self._json_modified = False

    @property
    def body(self) -> bytes:
        """The body bytes to forward: re-serialised only if a policy changed the JSON."""
        if self._json_modified:
            self._body = serialize_json(self._json)
            self._json_modified = False
        return self._body

    @body.setter
    def body(self, value: bytes) -> None:
        self._body = value
        self._json_loaded = False
        self._json_modified = False

    @property
    def json(self) -> Any:
        """The body parsed strictly (duplicate keys, depth and number checks); parsed once."""
        if not self._json_loaded:
            self._json = parse_strict_json(self._body) if self._body else None
            self._json_loaded = True
        return self._json

    def set_json(self, value: Any) -> None:
        self._json = value
        self._json_loaded = True
        self._json_modified = True

    def mark_json_modified(self) -> None:
        """Call after mutating the object returned by `json` in place."""
        self._json_modified = True

    @property
    def query(self) -> list[tuple[str, str]]:
        """Decoded (name, value) pairs; edit in place or assign a new list."""
        if self._query is None:
            self._query = parse_qsl(self._raw_query, keep_blank_values=True)
            self._query_as_parsed = list(self._query)
        return self._query

    @query.setter
    def query(self, pairs: list[tuple[str, str]]) -> None:
        if self._query is None:
            self.query  # noqa: B018 - keep the parsed original to compare against
        self._query = pairs

    @property
    def query_string(self) -> str:
        """The query to forward: the client's own bytes, or re-encoded after a change."""
        if self._query is None or self._query == self._query_as_parsed:
            return self._raw_query
        return urlencode(self._query, quote_via=quote)

    def query_value(self, name: str) -> str | None:
        for key, value in self.query:
            if key == name:
                return value
        return None

    @property
    def url(self) -> str:
        query = self.query_string
        return f"{self.scheme}://{self.host}{self.path}" + (f"?{query}" if query else "")


@dataclass(slots=True)
class Response:
    """A response on its way to the client: generated by the gateway or relayed from a backend.

    `body` holds a complete body; `stream` yields an upstream body chunk by chunk and is
    relayed without buffering. `release` frees the upstream connection.
    """

    status_code: int
    headers: Headers
    body: bytes = b""
    stream: AsyncIterator[bytes] | None = None
    release: Callable[[], Awaitable[None]] | None = None
    from_backend: bool = False

    async def aclose(self) -> None:
        if self.release is not None:
            release, self.release = self.release, None
            await release()

    async def read(self, limit: int) -> bytes | None:
        """The whole body, buffered (the stream is consumed and the connection released);
        None if it is longer than `limit` bytes, and then the response is left to relay as
        it was, the bytes read so far first. For small bodies a policy must rewrite."""
        if self.stream is None:
            return self.body if len(self.body) <= limit else None
        stream = self.stream
        parts: list[bytes] = []
        size = 0
        try:
            async for chunk in stream:
                parts.append(chunk)
                size += len(chunk)
                if size > limit:
                    self.stream = _replayed(parts, stream)
                    return None
        except BaseException:
            self.stream = None
            await self.aclose()
            raise
        self.stream = None
        await self.aclose()
        self.body = b"".join(parts)
        self.headers.delete("content-length")
        return self.body


async def _replayed(head: list[bytes], rest: AsyncIterator[bytes]) -> AsyncIterator[bytes]:
    for chunk in head:
        yield chunk
    async for chunk in rest:
        yield chunk


class ClaimsView(Mapping[str, str]):
    """`context.Claims`: each claim of the validated token as text, several values joined
    with ',' (as APIM's `Jwt.Claims.GetValueOrDefault`)."""

    __slots__ = ("_jwt",)

    def __init__(self, jwt: Jwt) -> None:
        self._jwt = jwt

    def __getitem__(self, name: str) -> str:
        joined = self._jwt.joined(name)
        if joined is None:
            raise KeyError(name)
        return joined

    def __iter__(self) -> Iterator[str]:
        return iter(self._jwt.claims)

    def __len__(self) -> int:
        return len(self._jwt.claims)


class RequestContext:
    __slots__ = (
        "api",
        "backend_has_request",
        "backend_id",
        "cache_hit",
        "client_disconnected",
        "clock",
        "deployment_id",
        "first_byte_at",
        "jwt",
        "last_error",
        "model",
        "observers",
        "operation",
        "policy_state",
        "product",
        "request",
        "request_id",
        "response",
        "section",
        "services",
        "shadow_rejections",
        "started",
        "steps",
        "subscription",
        "timestamp",
        "usage_meter",
        "user",
        "variables",
    )

    def __init__(
        self,
        request_id: str,
        request: RequestView,
        api: ApiInfo,
        operation: OperationInfo,
        clock: Clock = SYSTEM_CLOCK,
    ) -> None:
        self.request_id = request_id
        self.clock = clock
        self.started = clock.monotonic()
        self.timestamp = clock.now()
        self.request = request
        self.api = api
        self.operation = operation
        self.product: ProductInfo | None = None
        self.subscription: SubscriptionInfo | None = None
        self.user: UserInfo | None = None
        # The caller's validated token (validate-jwt), as `context.Claims` shows it.
        self.jwt: Jwt | None = None
        self.variables: dict[str, Any] = {}
        self.response: Response | None = None
        self.last_error: LastError | None = None
        self.backend_id: str | None = None
        self.deployment_id: str | None = None
        self.model: str | None = None
        # Filled by the runtime: shared services (clock, stores, clients).
        self.services: Any = None
        # Policies whose request hook ran and that want to see chunks / completion.
        self.observers: list[Policy] = []
        self.section = "inbound"
        # Reasons of rejections that shadow-mode policies recorded instead of enforcing.
        self.shadow_rejections: list[str] = []
        self.first_byte_at: float | None = None
        self.client_disconnected = False
        # A backend holds the request: it was written to one, and no error head came back
        # (a 429 being failed over or retried is not work the backend bills). Set by the
        # backends; a client that leaves meanwhile is charged the prompt.
        self.backend_has_request = False
        # Token usage of this request, when a policy needs it (limits, metrics).
        self.usage_meter: UsageMeter | None = None
        # Per-request state of policies, keyed by the policy (e.g. what a limit reserved).
        self.policy_state: dict[object, Any] = {}
        # Answered from the gateway's cache rather than by a backend.
        self.cache_hit = False
        # Timings of each policy and the backend call, only while the request is traced.
        self.steps: list[StepTiming] | None = None

    @property
    def claims(self) -> ClaimsView | None:
        return None if self.jwt is None else ClaimsView(self.jwt)

    @property
    def elapsed(self) -> float:
        return self.clock.monotonic() - self.started
