"""Router: templates (parameters, wildcards), APIM case rules, and the paths the SDKs call."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import httpx2
import openai
import pytest
import yaml

from aigw.config.errors import ConfigError, IssueCollector
from aigw.config.loader import load_config_text
from aigw.routing import Router, compile_template
from aigw.runtime import build_runtime


def router_for(apis: dict[str, Any]) -> Router:
    config = {"backends": {"b": {"url": "http://127.0.0.1:9"}}, "apis": apis}
    return build_runtime(load_config_text(yaml.safe_dump(config))).router


def http_api(path: str, **templates: str) -> dict[str, Any]:
    operations = {op: {"method": "GET", "url-template": t} for op, t in templates.items()}
    return {"type": "http", "path": path, "backend": "b", "operations": operations}


def matched(router: Router, path: str, method: str = "GET") -> tuple[str, str, dict[str, str]]:
    match = router.match(method, path)
    assert match is not None, path
    return match.route.api.id, match.route.operation.id, match.params


# --- wildcards -----------------------------------------------------------------------------


@pytest.mark.parametrize("path", ["/files", "/files/", "/files/a", "/files/a/b/c.txt"])
def test_trailing_star_matches_any_remainder(path: str) -> None:
    pattern, names = compile_template("/files/*")
    assert pattern.fullmatch(path) is not None
    assert names == ()


@pytest.mark.parametrize("path", ["/filesX", "/file", "/other/files/a"])
def test_trailing_star_stays_within_its_segment(path: str) -> None:
    pattern, _ = compile_template("/files/*")
    assert pattern.fullmatch(path) is None


@pytest.mark.parametrize(
    ("path", "rest"),
    [("/r", ""), ("/r/", ""), ("/r/a", "a"), ("/r/a/b/c", "a/b/c"), ("/r/A/%2F/b", "A/%2F/b")],
)
def test_rest_parameter_captures_slashes(path: str, rest: str) -> None:
    pattern, names = compile_template("/r/{*rest}")
    found = pattern.fullmatch(path)
    assert found is not None and names == ("rest",)
    assert found.groups() == (rest,)


def test_rest_parameter_after_a_segment_parameter() -> None:
    pattern, names = compile_template("/u/{user}/{*rest}")
    found = pattern.fullmatch("/u/Ann/x/y")
    assert found is not None
    assert dict(zip(names, found.groups(), strict=True)) == {"user": "Ann", "rest": "x/y"}


@pytest.mark.parametrize(
    "template", ["/r/{*rest}/x", "/r{*rest}", "/{*a}/{*b}", "/a/*/b", "/a*", "/a/*x"]
)
def test_wildcard_must_be_the_whole_last_segment(template: str) -> None:
    with pytest.raises(ValueError, match="whole last segment"):
        compile_template(template)
    issues = IssueCollector()
    pattern, names = compile_template(template, issues=issues, path="apis.x.operations.y")
    assert [issue.path for issue in issues.issues] == ["apis.x.operations.y"]
    assert names == () and pattern.fullmatch(template) is None


def test_wildcard_templates_route_end_to_end() -> None:
    router = router_for(
        {
            "files": http_api("files", anything="/*"),
            "raw": http_api("raw", item="/items/{id}", rest="/r/{*rest}"),
        }
    )
    assert matched(router, "/files") == ("files", "anything", {})
    assert matched(router, "/files/a/b") == ("files", "anything", {})
    assert matched(router, "/raw/r/a/b/c") == ("raw", "rest", {"rest": "a/b/c"})
    assert matched(router, "/raw/items/7") == ("raw", "item", {"id": "7"})
    assert router.match("GET", "/raw/items/7/x") is None


def test_misplaced_wildcard_is_a_config_error() -> None:
    config = {
        "backends": {"b": {"url": "http://127.0.0.1:9"}},
        "apis": {"raw": http_api("raw", bad="/r/{*rest}/tail")},
    }
    with pytest.raises(ConfigError) as err:
        build_runtime(load_config_text(yaml.safe_dump(config)))
    paths = {issue.path: issue.message for issue in err.value.issues}
    assert "whole last segment" in paths["apis.raw.operations.bad.url-template"]


# --- case rules ----------------------------------------------------------------------------


def test_template_literals_match_case_insensitively_and_parameters_keep_case() -> None:
    router = router_for({"w": http_api("w", items="/items", item="/items/{id}")})
    assert matched(router, "/w/Items")[1] == "items"
    assert matched(router, "/w/ITEMS/AbC") == ("w", "item", {"id": "AbC"})


def test_api_prefix_matches_case_insensitively_longest_first() -> None:
    router = router_for(
        {
            "general": http_api("Api", any="/*"),
            "special": http_api("api/Special", one="/one"),
        }
    )
    assert matched(router, "/API/special/one")[:2] == ("special", "one")
    assert matched(router, "/aPi/Special/two")[:2] == ("general", "any")
    match = router.match("GET", "/API/Special/One")
    assert match is not None and match.suffix == "/One"
    assert router.match("GET", "/apix/one") is None


def test_unicode_case_folding_does_not_reach_ascii_routes() -> None:
    # str.lower() folds KELVIN SIGN to 'k'; a route must not match through it.
    router = router_for({"k": http_api("kit", one="/link")})
    assert router.match("GET", "/kit/link") is not None
    assert router.match("GET", "/\u212ait/link") is None
    assert router.match("GET", "/kit/lin\u212a") is None


# --- the paths the official SDKs call ------------------------------------------------------

AZURE = {"az": {"type": "azure-openai", "path": "openai", "backend": "b"}}
# The calls each client makes, with the operation each must reach.
CALLS: list[tuple[str, Callable[[openai.OpenAI], Any]]] = [
    ("chat-completions", lambda c: c.chat.completions.create(model="gpt-4o", messages=[])),
    ("embeddings", lambda c: c.embeddings.create(model="emb-3", input="x")),
    ("completions", lambda c: c.completions.create(model="gpt-35", prompt="x")),
    ("responses", lambda c: c.responses.create(model="gpt-4o", input="x")),
    ("models", lambda c: c.models.list()),
]


def sdk_requests(make: Callable[[httpx2.Client], openai.OpenAI]) -> list[tuple[str, str]]:
    """The (method, path) of every call in CALLS, as the SDK sends them."""
    sent: list[tuple[str, str]] = []

    def record(request: httpx2.Request) -> httpx2.Response:
        sent.append((request.method, request.url.path))
        return httpx2.Response(500, json={"error": {"message": "recorded"}})

    client = make(httpx2.Client(transport=httpx2.MockTransport(record)))
    for _, call in CALLS:
        with pytest.raises(openai.InternalServerError):
            call(client)
    return sent


def azure(**options: Any) -> Callable[[httpx2.Client], openai.OpenAI]:
    def make(http: httpx2.Client) -> openai.OpenAI:
        return openai.AzureOpenAI(
            api_key="x", api_version="2024-10-21", http_client=http, max_retries=0, **options
        )

    return make


@pytest.mark.parametrize(
    ("make", "deployment"),
    [
        # Without a deployment the SDK puts the body's model in the deployment routes.
        (azure(azure_endpoint="http://gw"), None),
        (azure(base_url="http://gw/openai"), None),
        # With one, deployment routes use it; responses and models stay at /openai/...
        (azure(azure_endpoint="http://gw", azure_deployment="dep-1"), "dep-1"),
    ],
    ids=["endpoint", "base-url", "endpoint-and-deployment"],
)
def test_every_azure_sdk_call_routes(
    make: Callable[[httpx2.Client], openai.OpenAI], deployment: str | None
) -> None:
    router = router_for(AZURE)
    sent = sdk_requests(make)
    assert [path for _, path in sent][3:] == ["/openai/responses", "/openai/models"]
    models = {"chat-completions": "gpt-4o", "embeddings": "emb-3", "completions": "gpt-35"}
    for (operation, _), (method, path) in zip(CALLS, sent, strict=True):
        api, found, params = matched(router, path, method)
        assert (api, found) == ("az", operation), path
        if operation in models:
            assert params == {"deployment-id": deployment or models[operation]}


def test_every_openai_sdk_call_routes_on_azure_v1_and_openai() -> None:
    router = router_for({**AZURE, "oa": {"type": "openai", "backend": "b"}})

    def v1(base_url: str) -> Callable[[httpx2.Client], openai.OpenAI]:
        return lambda http: openai.OpenAI(
            base_url=base_url, api_key="x", http_client=http, max_retries=0
        )

    for base_url, api in [("http://gw/openai/v1", "az"), ("http://gw/v1", "oa")]:
        sent = sdk_requests(v1(base_url))
        for (operation, _), (method, path) in zip(CALLS, sent, strict=True):
            if api == "az" and operation == "completions":
                assert router.match(method, path) is None  # not served by Azure's v1 API
                continue
            assert matched(router, path, method)[:2] == (api, operation), path
