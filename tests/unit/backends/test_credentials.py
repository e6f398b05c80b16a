from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from aigw.backends.credentials import BearerToken, StaticHeader, build_credential
from aigw.config.errors import IssueCollector
from aigw.config.loader import load_config_text
from aigw.config.model import BackendConfig, BackendCredentialsConfig, IdentityConfig
from aigw.identity.headers import without_query_credentials
from aigw.runtime import _check_credentials


def shared() -> Any:
    resources: dict[Any, Any] = {}
    return lambda key, create: resources.setdefault(key, create())


def test_exactly_one_kind_of_credentials() -> None:
    with pytest.raises(ValidationError, match="exactly one"):
        BackendCredentialsConfig.model_validate({})
    with pytest.raises(ValidationError, match="exactly one"):
        BackendCredentialsConfig.model_validate(
            {"managed-identity": {"resource": "r"}, "header": {"value": "v"}}
        )
    with pytest.raises(ValidationError, match="client-secret"):
        BackendCredentialsConfig.model_validate(
            {"client-credentials": {"token-url": "https://idp/token", "client-id": "c"}}
        )


def test_only_http_backends_have_credentials() -> None:
    with pytest.raises(ValidationError, match="only an http backend"):
        BackendConfig.model_validate(
            {
                "type": "pool",
                "pool": {"members": [{"backend": "a"}]},
                "credentials": {"header": {"value": "x"}},
            }
        )


def test_credentials_by_kind_share_caches() -> None:
    share = shared()
    identity = IdentityConfig()
    mi = BackendCredentialsConfig.model_validate({"managed-identity": {"resource": "r"}})
    first = build_credential(mi, identity, share)
    second = build_credential(mi, identity, share)
    assert isinstance(first, BearerToken) and isinstance(second, BearerToken)
    assert first.cache is second.cache and first.header == "authorization"
    header = build_credential(
        BackendCredentialsConfig.model_validate({"header": {"name": "X-Key", "value": "v"}}),
        identity,
        share,
    )
    assert isinstance(header, StaticHeader) and header.header == "x-key"


CONFIG = """
named-values:
  key: {env: TEST_BACKEND_KEY, secret: true}
  plain: {value: not-a-secret}
backends:
  a: {url: "http://a", credentials: {header: {value: "{{key}}"}}}
  b: {url: "http://b", credentials: {header: {value: "{{plain}}"}}}
  d: {url: "http://d", credentials: {header: {name: authorization, value: "Bearer {{key}}"}}}
  c:
    url: "http://c"
    credentials:
      client-credentials: {token-url: "https://idp/token", client-id: c, client-secret: inline}
"""


def test_keys_and_client_secrets_must_be_secret_named_values(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("TEST_BACKEND_KEY", "secret-key-value")
    issues = IssueCollector()
    _check_credentials(load_config_text(CONFIG), issues)
    paths = {issue.path for issue in issues.issues}
    assert paths == {
        "backends.b.credentials.header.value",
        "backends.c.credentials.client-credentials.client-secret",
    }


def test_caller_keys_are_taken_out_of_the_query_bytes_otherwise_kept() -> None:
    assert without_query_credentials("") == ""
    assert without_query_credentials("a=%2F&b") == "a=%2F&b"
    assert without_query_credentials("api-key=1&monkey=2&api-version=x") == "monkey=2&api-version=x"
    assert without_query_credentials("Subscription-Key=1&API%2dKEY=2&api%2Dkey&k=v") == "k=v"
