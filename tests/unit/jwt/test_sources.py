"""`OidcKeySource` against a real HTTP server on 127.0.0.1 serving discovery and JWKS:
good key sets are kept, bad replies never replace them, unknown key ids cause a bounded
number of fetches, and nothing works before a first key set arrived (fail closed)."""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
from aiohttp import web

from aigw.jwt.errors import TokenRejected
from aigw.jwt.keys import from_jwk
from aigw.jwt.sources import FetchLimits, OidcKeySource, StaticKeys, check_url
from aigw.jwt.validator import JwtValidator, ValidationRules
from tests.unit.jwt.minting import AUDIENCE, NOW, Signer, claims, mint, signer
from tests.unit.jwt.provider import KEY_A, KEY_B, KEY_C, Provider

# Fast limits: no periodic refresh, no cool-down, unless a test asks for them.
FAST = FetchLimits(
    timeout=0.3,
    max_bytes=16 * 1024,
    refresh_interval=3600,
    unknown_key_cooldown=0.0,
    retry_interval=3600,
)


@pytest.fixture
async def provider() -> AsyncIterator[Provider]:
    idp = Provider()
    await idp.start()
    yield idp
    await idp.stop()


@pytest.fixture
async def sources() -> AsyncIterator[list[OidcKeySource]]:
    """Sources a test creates are closed after it."""
    made: list[OidcKeySource] = []
    yield made
    for source in made:
        await source.close()


async def started(
    provider: Provider, sources: list[OidcKeySource], limits: FetchLimits = FAST
) -> OidcKeySource:
    source = OidcKeySource(provider.url, limits)
    sources.append(source)
    await source.start()
    return source


def validator_for(source: OidcKeySource) -> JwtValidator:
    return JwtValidator([source], ValidationRules(frozenset({AUDIENCE}), frozenset()))


def token(provider: Provider, key: Signer = KEY_A, **extra: Any) -> str:
    return mint(claims(iss=provider.issuer, jti=secrets.token_hex(8), **extra), key)


async def reason(validator: JwtValidator, text: str) -> str:
    with pytest.raises(TokenRejected) as info:
        await validator.validate(text, NOW)
    return info.value.reason


async def eventually(condition: Callable[[], bool], timeout: float = 2.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not met in time"
        await asyncio.sleep(0.01)


def reply(status: int = 200, body: bytes = b"", content_type: str = "application/json") -> Any:
    async def answer(request: web.Request) -> web.StreamResponse:
        return web.Response(status=status, body=body, content_type=content_type)

    return answer


# -- the first fetch -------------------------------------------------------------------------


async def test_keys_are_fetched_at_start_and_tokens_verify(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    source = await started(provider, sources)
    assert source.ready and source.issuer == provider.issuer and source.fetches == 1
    assert (provider.discovery_hits, provider.jwks_hits) == (1, 1)
    validator = validator_for(source)
    assert (await validator.validate(token(provider), NOW)).issuer == provider.issuer
    assert await validator.validate(token(provider, KEY_B), NOW)
    assert provider.jwks_hits == 1


@pytest.mark.parametrize(
    "issuer",
    [
        "https://evil.example/tenant",
        "{base}/other",
        "{base}/tenant/v2",
        "{base}/TENANT",
        "{base}",
        None,
        17,
        ["{base}/tenant"],
    ],
)
async def test_a_discovery_issuer_that_does_not_match_its_url_is_refused(
    provider: Provider, sources: list[OidcKeySource], issuer: Any
) -> None:
    if isinstance(issuer, str):
        issuer = issuer.format(base=provider.base)
    elif isinstance(issuer, list):
        issuer = [item.format(base=provider.base) for item in issuer]
    provider.discovery_override = {"issuer": issuer}
    source = await started(provider, sources)
    assert not source.ready and source.issuer is None
    assert provider.jwks_hits == 0
    assert await reason(validator_for(source), token(provider)) == "TokenSignatureKeyNotFound"


async def test_a_trailing_slash_on_the_discovery_issuer_is_its_own_issuer(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    provider.discovery_override = {"issuer": provider.issuer + "/"}
    source = await started(provider, sources)
    assert source.ready and source.issuer == provider.issuer + "/"
    validator = validator_for(source)
    assert await reason(validator, token(provider)) == "TokenIssuerNotAllowed"
    assert await validator.validate(mint(claims(iss=provider.issuer + "/"), KEY_A), NOW)


@pytest.mark.parametrize(
    "jwks_uri",
    [
        "http://example.com/keys",
        "http://169.254.169.254/latest/meta-data",
        "http://10.0.0.1/keys",
        "file:///etc/passwd",
        "ftp://127.0.0.1/keys",
        "/tenant/keys",
        "https://",
        None,
        42,
    ],
)
async def test_a_jwks_uri_that_is_not_https_or_loopback_is_never_fetched(
    provider: Provider, sources: list[OidcKeySource], jwks_uri: Any
) -> None:
    provider.discovery_override = {"jwks_uri": jwks_uri}
    source = await started(provider, sources)
    assert not source.ready
    assert provider.jwks_hits == 0


async def test_a_jwks_uri_elsewhere_on_loopback_is_allowed(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    provider.discovery_override = {"jwks_uri": provider.issuer + "/other-keys"}
    assert (await started(provider, sources)).ready


async def test_a_remote_provider_cannot_send_the_gateway_to_plain_http_on_loopback(
    provider: Provider, sources: list[OidcKeySource], monkeypatch: pytest.MonkeyPatch
) -> None:
    # Plain HTTP on loopback is for local providers, not a door a remote document opens.
    remote = "https://login.example/t/.well-known/openid-configuration"
    source = OidcKeySource(remote, FAST)
    sources.append(source)
    fetch = source._get_json

    async def get_json(url: str) -> dict[str, Any]:
        if url == remote:
            return {"issuer": "https://login.example/t", "jwks_uri": provider.issuer + "/keys"}
        return await fetch(url)

    monkeypatch.setattr(source, "_get_json", get_json)
    await source.start()
    assert not source.ready and provider.jwks_hits == 0


def test_discovery_urls_must_be_https_or_loopback_http() -> None:
    for url in ("http://login.example/.well-known/openid-configuration", "ftp://x/", "x", ""):
        with pytest.raises(ValueError, match="https"):
            OidcKeySource(url)
    for url in (
        "https://login.example/t/.well-known/openid-configuration",
        "http://localhost:8080/.well-known/openid-configuration",
        "http://[::1]:8080/.well-known/openid-configuration",
    ):
        assert check_url(url, "url") == url


async def test_before_any_key_set_tokens_fail_closed_then_recover(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    provider.jwks_reply = reply(503)
    limits = FetchLimits(timeout=0.3, unknown_key_cooldown=0.0, retry_interval=0.05)
    source = await started(provider, sources, limits)
    validator = validator_for(source)
    assert not source.ready
    for _ in range(3):
        assert await reason(validator, token(provider)) == "TokenSignatureKeyNotFound"
    provider.jwks_reply = None  # the provider comes back: the background retry finds it
    await eventually(lambda: source.ready)
    assert await validator.validate(token(provider), NOW)


async def test_requests_do_not_hammer_a_provider_that_never_answered(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    provider.jwks_reply = reply(500)
    limits = FetchLimits(timeout=0.3, unknown_key_cooldown=0.0, retry_interval=60)
    source = await started(provider, sources, limits)
    validator = validator_for(source)
    for _ in range(20):
        assert await reason(validator, token(provider)) == "TokenSignatureKeyNotFound"
    assert provider.jwks_hits <= 2  # the start, and at most one per retry interval


# -- bad replies never replace a good key set ----------------------------------------------


async def chunked_reply(request: web.Request) -> web.StreamResponse:
    """A valid key set, but far over the size cap, sent without a Content-Length."""
    body = json.dumps({"keys": [KEY_C.public_jwk()], "pad": "x" * 100_000}).encode()
    response = web.StreamResponse()
    response.content_type = "application/json"
    await response.prepare(request)
    for start in range(0, len(body), 1000):
        await response.write(body[start : start + 1000])
    await response.write_eof()
    return response


BAD_REPLIES: dict[str, Any] = {
    "500": reply(500, b'{"keys": []}'),
    "404": reply(404),
    "302": reply(302),
    "html": reply(200, b"<html><body>Service Unavailable</body></html>", "text/html"),
    "empty-body": reply(200, b""),
    "empty-keys": reply(200, b'{"keys": []}'),
    "no-keys": reply(200, b'{"other": []}'),
    "keys-object": reply(200, b'{"keys": {}}'),
    "array": reply(200, b"[]"),
    "string": reply(200, b'"keys"'),
    "unusable-keys": reply(
        200,
        json.dumps(
            {"keys": [{"kty": "RSA", "n": "AQAB", "e": "AQAB"}, {"kty": "oct", "k": "x"}]}
        ).encode(),
    ),
    "enc-only": reply(200, json.dumps({"keys": [KEY_C.public_jwk(use="enc")]}).encode()),
    "not-utf8": reply(200, b'{"keys": ["\xff"]}'),
    "oversized": reply(
        200, json.dumps({"keys": [KEY_C.public_jwk()], "pad": "x" * 20_000}).encode()
    ),
    "oversized-chunked": chunked_reply,
    "deeply-nested": reply(200, b"[" * 8000 + b"]" * 8000),
}


@pytest.mark.parametrize("bad", list(BAD_REPLIES))
async def test_an_invalid_reply_never_replaces_a_good_key_set(
    provider: Provider, sources: list[OidcKeySource], bad: str
) -> None:
    source = await started(provider, sources)
    validator = validator_for(source)
    provider.jwks_reply = BAD_REPLIES[bad]
    provider.keys = [KEY_C.public_jwk()]
    hits = provider.jwks_hits
    assert await source.refetch_for("c") is False
    assert provider.jwks_hits == hits + 1
    assert source.ready and source.fetches == 1
    assert await validator.validate(token(provider), NOW)
    assert await validator.validate(token(provider, KEY_B), NOW)
    assert await reason(validator, token(provider, KEY_C)) == "TokenSignatureKeyNotFound"


async def test_a_timeout_never_replaces_a_good_key_set(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    source = await started(provider, sources)
    provider.jwks_reply = provider.hang
    started_at = time.monotonic()
    assert await source.refetch_for("c") is False
    assert time.monotonic() - started_at < 1.0  # the 0.3 s timeout, not the 5 s hang
    assert source.ready
    assert await validator_for(source).validate(token(provider), NOW)


async def test_a_discovery_failure_never_replaces_a_good_key_set(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    source = await started(provider, sources)
    provider.discovery_override = {"issuer": "https://evil.example/tenant"}
    assert await source.refetch_for("x") is False
    assert source.issuer == provider.issuer
    assert await validator_for(source).validate(token(provider), NOW)


async def test_a_large_key_set_sent_in_many_chunks_is_read_whole(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    keys = [signer("ES256", kid=f"k{n}", index=n).public_jwk() for n in range(30)]
    body = json.dumps({"keys": [*keys, KEY_A.public_jwk()]}).encode()
    assert len(body) > 4096

    async def dribble(request: web.Request) -> web.StreamResponse:
        response = web.StreamResponse()
        response.content_type = "application/json"
        await response.prepare(request)
        for start in range(0, len(body), 500):
            await response.write(body[start : start + 500])
            await asyncio.sleep(0)
        await response.write_eof()
        return response

    provider.jwks_reply = dribble
    source = await started(provider, sources)
    assert source.ready
    assert len(source.candidates(None, "ES256")) == 30
    assert await validator_for(source).validate(token(provider), NOW)


async def test_unusable_entries_are_skipped_and_the_rest_kept(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    provider.keys = [
        {**KEY_C.public_jwk(), "alg": ["RS256"]},
        {"kty": "RSA", "kid": "x", "n": {"a": 1}, "e": "AQAB"},
        KEY_B.public_jwk(),
    ]
    source = await started(provider, sources)
    assert source.ready
    assert [key.kid for key in source.candidates(None, "ES256")] == ["b"]


# -- unknown key ids ----------------------------------------------------------------------


async def test_an_unknown_kid_triggers_one_fetch_for_100_concurrent_requests(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    source = await started(provider, sources)
    validator = validator_for(source)
    provider.keys.append(KEY_C.public_jwk())  # rotation: a new key appears
    provider.jwks_delay = 0.1
    hits = provider.jwks_hits
    tokens = [token(provider, KEY_C) for _ in range(100)]
    results = await asyncio.gather(*(validator.validate(text, NOW) for text in tokens))
    assert len(results) == 100
    assert provider.jwks_hits == hits + 1


async def test_an_unknown_kid_nobody_has_gives_one_fetch_and_key_not_found(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    source = await started(provider, sources)
    validator = validator_for(source)
    provider.jwks_delay = 0.1
    tokens = [token(provider, KEY_C.with_kid("ghost")) for _ in range(100)]
    results = await asyncio.gather(
        *(validator.validate(text, NOW) for text in tokens), return_exceptions=True
    )
    assert all(
        isinstance(result, TokenRejected) and result.reason == "TokenSignatureKeyNotFound"
        for result in results
    )
    assert provider.jwks_hits == 2


async def test_a_flood_of_random_kids_fetches_once_per_cooldown_and_valid_traffic_flows(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    # A cool-down long enough that a loaded machine cannot stretch the test past it.
    limits = FetchLimits(timeout=1.0, unknown_key_cooldown=1.5, refresh_interval=3600)
    source = await started(provider, sources, limits)
    validator = validator_for(source)
    provider.jwks_delay = 0.3
    tokens = [token(provider, KEY_A.with_kid(secrets.token_hex(8))) for _ in range(300)]
    flood = [asyncio.ensure_future(validator.validate(minted, NOW)) for minted in tokens]
    await eventually(lambda: provider.jwks_hits == 2)  # the refetch is now in flight
    # Valid tokens (each one new, so no cache) verify at once, without waiting for it.
    for _ in range(20):
        began = time.monotonic()
        assert await validator.validate(token(provider), NOW)
        assert time.monotonic() - began < 0.15
    assert not all(task.done() for task in flood)
    results = await asyncio.gather(*flood, return_exceptions=True)
    assert {getattr(result, "reason", result) for result in results} == {
        "TokenSignatureKeyNotFound"
    }
    assert provider.jwks_hits == 2
    # A second wave inside the cool-down fetches nothing and answers at once.
    second_wave = [token(provider, KEY_A.with_kid(str(kid))) for kid in range(100)]
    began = time.monotonic()
    for minted in second_wave:
        assert await reason(validator, minted) == "TokenSignatureKeyNotFound"
    assert time.monotonic() - began < 0.5
    assert provider.jwks_hits == 2
    await asyncio.sleep(limits.unknown_key_cooldown)  # after it, one more fetch is allowed
    assert await reason(validator, token(provider, KEY_A.with_kid("late"))) == (
        "TokenSignatureKeyNotFound"
    )
    assert provider.jwks_hits == 3


async def test_key_rotation_is_picked_up_through_an_unknown_kid(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    source = await started(provider, sources)
    validator = validator_for(source)
    assert await validator.validate(token(provider), NOW)
    provider.keys = [KEY_C.public_jwk()]  # old keys withdrawn, a new one published
    assert await validator.validate(token(provider, KEY_C), NOW)
    assert provider.jwks_hits == 2
    # The withdrawn key no longer verifies new tokens.
    assert await reason(validator, token(provider)) == "TokenSignatureKeyNotFound"


async def test_a_cancelled_waiter_does_not_cancel_the_shared_fetch(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    source = await started(provider, sources)
    validator = validator_for(source)
    provider.keys.append(KEY_C.public_jwk())
    provider.jwks_delay = 0.1
    first = asyncio.ensure_future(validator.validate(token(provider, KEY_C), NOW))
    second = asyncio.ensure_future(validator.validate(token(provider, KEY_C), NOW))
    await asyncio.sleep(0.02)
    first.cancel()
    assert await second
    assert provider.jwks_hits == 2


# -- refresh, outages, shutdown -------------------------------------------------------------


async def test_keys_are_refreshed_periodically(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    limits = FetchLimits(timeout=0.3, refresh_interval=0.05, unknown_key_cooldown=3600)
    source = await started(provider, sources, limits)
    provider.keys.append(KEY_C.public_jwk())
    await eventually(lambda: bool(source.candidates("c", "RS256")))
    await eventually(lambda: provider.jwks_hits >= 4)
    assert source.fetches >= 3


async def test_the_provider_going_down_keeps_cached_keys_working(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    limits = FetchLimits(timeout=0.3, refresh_interval=0.05, unknown_key_cooldown=0.0)
    source = await started(provider, sources, limits)
    validator = validator_for(source)
    await provider.stop()
    await asyncio.sleep(0.2)  # several scheduled refreshes fail meanwhile
    assert source.ready
    assert await source.refetch_for("c") is False
    assert await validator.validate(token(provider), NOW)
    assert await validator.validate(token(provider, KEY_B), NOW)
    assert await reason(validator, token(provider, KEY_C)) == "TokenSignatureKeyNotFound"


async def test_a_provider_down_at_start_fails_closed(sources: list[OidcKeySource]) -> None:
    idp = Provider()
    await idp.start()
    await idp.stop()  # nothing listens on that port any more
    source = await started(idp, sources)
    assert not source.ready
    assert await reason(validator_for(source), token(idp)) == "TokenSignatureKeyNotFound"


async def test_close_cancels_the_refresher_and_later_lookups_fail_closed(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    limits = FetchLimits(timeout=0.3, refresh_interval=0.02, unknown_key_cooldown=0.0)
    source = await started(provider, sources, limits)
    await eventually(lambda: provider.jwks_hits >= 2)
    task = source._task
    assert task is not None and not task.done()
    await source.close()
    assert task.cancelled()
    hits = provider.jwks_hits
    await asyncio.sleep(0.1)
    assert provider.jwks_hits == hits
    assert await source.refetch_for("c") is False
    assert provider.jwks_hits == hits
    await source.close()  # twice is fine


async def test_close_during_a_fetch_ends_it_at_once(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    limits = FetchLimits(timeout=5, unknown_key_cooldown=0.0, refresh_interval=3600)
    source = await started(provider, sources, limits)
    provider.jwks_reply = provider.hang
    pending = asyncio.ensure_future(source.refetch_for("c"))
    await asyncio.sleep(0.05)
    began = time.monotonic()
    await source.close()
    await asyncio.wait([pending], timeout=1)
    assert pending.done() and time.monotonic() - began < 1


async def test_close_during_a_fetch_fails_the_waiting_requests_closed(
    provider: Provider, sources: list[OidcKeySource]
) -> None:
    limits = FetchLimits(timeout=5, unknown_key_cooldown=0.0, refresh_interval=3600)
    source = await started(provider, sources, limits)
    provider.jwks_reply = provider.hang
    waiting = asyncio.ensure_future(validator_for(source).validate(token(provider, KEY_C), NOW))
    await asyncio.sleep(0.05)
    await source.close()
    await asyncio.wait([waiting], timeout=1)
    assert waiting.done() and not waiting.cancelled()
    error = waiting.exception()
    assert isinstance(error, TokenRejected) and error.reason == "TokenSignatureKeyNotFound"


async def test_a_provider_not_fetched_yet_still_owns_its_issuer(provider: Provider) -> None:
    # While A's provider is unreachable, another trusted key must not speak for A's issuer.
    unreached = OidcKeySource(provider.url, FAST)
    other = StaticKeys([from_jwk(KEY_C.public_jwk())])
    rules = ValidationRules(frozenset({AUDIENCE}), frozenset({provider.issuer, "partner"}))
    validator = JwtValidator([unreached, other], rules)
    assert await validator.validate(mint(claims(iss="partner"), KEY_C), NOW)
    assert await reason(validator, token(provider, KEY_C)) == "TokenSignatureKeyNotFound"
    assert unreached.vouches_for(provider.issuer) and unreached.vouches_for(provider.issuer + "/")
    assert not unreached.vouches_for(provider.base) and not unreached.vouches_for(None)


async def test_an_unstarted_source_fails_closed_without_fetching(provider: Provider) -> None:
    source = OidcKeySource(provider.url, FAST)
    assert await source.refetch_for("a") is False
    assert await reason(validator_for(source), token(provider)) == "TokenSignatureKeyNotFound"
    assert provider.discovery_hits == 0


async def test_static_keys_never_refetch() -> None:
    keys = StaticKeys([])
    assert await keys.refetch_for("a") is False
    assert keys.issuer is None
