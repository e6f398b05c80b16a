"""Helpers for policy unit tests: build statements from config dicts, make a request context."""

from __future__ import annotations

import asyncio
from typing import Any
from urllib.parse import urlencode

import aigw.policies.builtin  # noqa: F401  (registers the built-in policies)
from aigw.config.errors import IssueCollector
from aigw.context import ApiInfo, OperationInfo, RequestContext, RequestView, Response
from aigw.headers import Headers
from aigw.policies.base import Policy
from aigw.policies.build import BuildContext

BACKENDS = frozenset({"primary", "secondary"})


def build(
    statements: list[Any], section: str = "inbound", backends: frozenset[str] = BACKENDS
) -> tuple[list[Policy], dict[str, str]]:
    """Built policies and config issues as {path: message}."""
    issues = IssueCollector()
    context = BuildContext(issues=issues, backend_ids=backends, section=section)
    built = context.statements(statements, f"policies.{section}")
    policies = [item for item in built if isinstance(item, Policy)]
    return policies, {issue.path: issue.message for issue in issues.issues}


def build_one(name: str, attributes: dict[str, Any], section: str = "inbound") -> Policy:
    policies, issues = build([{name: attributes}], section)
    assert issues == {}, issues
    assert len(policies) == 1
    return policies[0]


def issues_of(name: str, attributes: Any, section: str = "inbound") -> dict[str, str]:
    _, issues = build([{name: attributes}], section)
    assert issues, "expected a config error"
    return issues


def make_ctx(
    *,
    headers: list[tuple[str, str]] | None = None,
    query: list[tuple[str, str]] | None = None,
    client_ip: str = "203.0.113.7",
    path: str = "/chat/completions",
    url_template: str = "/chat/completions",
    matched: dict[str, str] | None = None,
    response: Response | None = None,
) -> RequestContext:
    request = RequestView(
        method="POST",
        scheme="http",
        host="gw.example",
        path=path,
        query_string=urlencode(query or []),
        headers=Headers(headers or []),
        client_ip=client_ip,
        body=b"{}",
    )
    request.matched_parameters = dict(matched or {})
    api = ApiInfo(id="chat", name="Chat", path="openai", type="openai")
    operation = OperationInfo(id="op", name="Op", method="POST", url_template=url_template)
    ctx = RequestContext("req-1", request, api, operation)
    ctx.response = response
    return ctx


def run(policy: Policy, ctx: RequestContext) -> Response | None:
    return asyncio.run(policy.apply(ctx))
