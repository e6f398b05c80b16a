"""The subscription check: APIM's built-in step between routing and the policy chain.

It reads the caller's key (header first; the query only when the header is absent), takes it
out of the request so no backend ever sees it, and decides, exactly as APIM does, whether
the call may go on and in which product's context. One gate is compiled per API at load.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from aigw.context import ProductInfo, RequestContext, RequestView, SubscriptionInfo, UserInfo
from aigw.errors import BadRequest, GatewayError
from aigw.subscriptions.directory import SubscriptionIndex
from aigw.subscriptions.model import Subscription

MISSING_KEY_MESSAGE = (
    "Access denied due to missing subscription key. "
    "Make sure to include subscription key when making requests to an API."
)
INVALID_KEY_MESSAGE = (
    "Access denied due to invalid subscription key. "
    "Make sure to provide a valid key for an active subscription."
)


class SubscriptionKeyNotFound(GatewayError):
    status_code = 401
    reason = "SubscriptionKeyNotFound"
    default_message = MISSING_KEY_MESSAGE
    source = "authorization"


class SubscriptionKeyInvalid(GatewayError):
    status_code = 401
    reason = "SubscriptionKeyInvalid"
    default_message = INVALID_KEY_MESSAGE
    source = "authorization"


class SubscriptionKeyAmbiguous(BadRequest):
    reason = "SubscriptionKeyAmbiguous"
    default_message = "Send the subscription key once: it was found more than once"
    source = "authorization"


@dataclass(frozen=True, slots=True)
class KeyLocation:
    """Where an API's callers put their key. `Authorization` carries it as a Bearer token."""

    header: str  # as configured, for WWW-Authenticate
    query: str

    @property
    def bearer(self) -> bool:
        return self.header.lower() == "authorization"


def take_key(request: RequestView, location: KeyLocation) -> str | None:
    """The presented key, removed from the request (header and query alike)."""
    values = request.headers.get_all(location.header)
    if values:
        request.headers.delete(location.header)
    in_query = _take_query_key(request, location.query)
    if len(values) > 1:
        raise SubscriptionKeyAmbiguous()
    if values:
        value = values[0].strip()
        if location.bearer:
            scheme, _, token = value.partition(" ")
            # Another scheme is a credential, just not a key: it never counts as one.
            value = token.strip() if scheme.lower() == "bearer" else "\x00"
        return value or None
    if len(in_query) > 1:
        raise SubscriptionKeyAmbiguous()
    return (in_query[0] or None) if in_query else None


def _take_query_key(request: RequestView, name: str) -> list[str]:
    raw = request.query_string
    # Parse the query only when it may hold the name (percent-encoded names included).
    if not raw or (name not in raw and "%" not in raw):
        return []
    found = [value for key, value in request.query if key == name]
    if found:
        request.query = [(key, value) for key, value in request.query if key != name]
    return found


@dataclass(frozen=True, slots=True)
class SubscriptionGate:
    api_id: str
    api_path: str
    required: bool
    location: KeyLocation
    # The published open product containing this API, if any: anonymous calls run in it.
    open_product: ProductInfo | None
    # Products containing this API, for product-scoped keys.
    products: Mapping[str, ProductInfo]
    index: SubscriptionIndex

    def admit(self, ctx: RequestContext) -> None:
        """Set the subscription, product and user of the request, or raise a 401."""
        key = take_key(ctx.request, self.location)
        if not self.required:  # APIM ignores a key sent to an API that needs none
            ctx.product = self.open_product
            return
        if key is None:
            if self.open_product is not None:
                ctx.product = self.open_product
                return
            raise SubscriptionKeyNotFound(headers=[self._challenge(ctx)])
        subscription = self.index.find(key)
        if subscription is not None and self._accepts(subscription, ctx):
            ctx.subscription = SubscriptionInfo(subscription.id, subscription.display_name, key)
            if subscription.owner_id is not None:
                ctx.user = UserInfo(subscription.owner_id)
            scope = subscription.scope
            # Product policies apply only to product keys (APIM: not to API or all-API keys).
            ctx.product = self.products[scope.target] if scope.kind == "product" else None  # type: ignore[index]
            return
        if subscription is None and self.open_product is not None:
            # APIM's flow: a key that matches nothing is ignored where an open product
            # admits anonymous calls. A key of a real subscription that is not valid here
            # (other scope, suspended, expired) is refused, as APIM's matrix says.
            ctx.product = self.open_product
            return
        raise SubscriptionKeyInvalid(headers=[self._challenge(ctx)])

    def _accepts(self, subscription: Subscription, ctx: RequestContext) -> bool:
        if subscription.state != "active":
            return False
        if subscription.expires_at is not None and ctx.clock.now() >= subscription.expires_at:
            return False
        scope = subscription.scope
        if scope.kind == "product":
            return scope.target in self.products
        return scope.kind == "all" or scope.target == self.api_id

    def _challenge(self, ctx: RequestContext) -> tuple[str, str]:
        host = ctx.request.host.replace('"', "").replace("\\", "")
        realm = f"{ctx.request.scheme}://{host}/{self.api_path}".rstrip("/")
        return (
            "www-authenticate",
            f'AzureApiManagementKey realm="{realm}",name="{self.location.header}",type="header"',
        )
