"""Config loading: every problem reported at once, each with its path; named values."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.config.errors import ConfigError
from aigw.config.loader import load_config, load_config_text
from aigw.runtime import build_runtime


def issues_of(text: str) -> dict[str, str]:
    with pytest.raises(ConfigError) as err:
        build_runtime(load_config_text(text))
    return {issue.path: issue.message for issue in err.value.issues}


def test_all_errors_reported_at_once_with_paths() -> None:
    found = issues_of(
        """
gateway:
  port: "eighty"
  colour: blue
backends:
  b: {url: "ftp://x"}
apis:
  chat:
    type: openai
    backend: missing
    policies:
      inbound:
        - set-backend-service: {backend-id: nowhere}
        - no-such-policy: {}
        - set-header: {name: x, exists-action: sometimes, value: a}
"""
    )
    assert "gateway.port" in found
    assert "gateway.colour" in found and "Extra inputs" in found["gateway.colour"]
    assert "backends.b" in found and "http" in found["backends.b"]


def test_policy_errors_have_paths() -> None:
    found = issues_of(
        """
backends:
  b: {url: "http://127.0.0.1:9"}
apis:
  chat:
    type: openai
    backend: missing
    policies:
      inbound:
        - set-backend-service: {backend-id: nowhere}
        - no-such-policy: {}
        - set-header: {name: x, exists-action: sometimes, value: a}
        - set-header: {name: x, value: '@(context.Nope)'}
"""
    )
    assert found["apis.chat.backend"] == "backend 'missing' is not defined"
    assert "nowhere" in found["apis.chat.policies.inbound[0].set-backend-service"]
    assert found["apis.chat.policies.inbound[1]"].startswith("unknown policy 'no-such-policy'")
    assert "apis.chat.policies.inbound[2].set-header.exists-action" in found
    expression_issue = next(
        m for p, m in found.items() if p.startswith("apis.chat.policies.inbound[3]")
    )
    assert "context.Nope" in expression_issue and "position" in expression_issue


def test_unknown_operation_of_llm_api() -> None:
    found = issues_of(
        """
backends: {b: {url: "http://127.0.0.1:9"}}
apis:
  chat:
    type: openai
    backend: b
    operations:
      chat-complete: {}
"""
    )
    assert "apis.chat.operations.chat-complete" in found


def test_duplicate_yaml_keys_are_rejected() -> None:
    with pytest.raises(ConfigError) as err:
        load_config_text("backends:\n  b: {url: 'http://a'}\n  b: {url: 'http://b'}\n")
    assert "duplicate key 'b'" in str(err.value)


def test_named_values_from_env_and_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    secret_file = tmp_path / "key"
    secret_file.write_text("s3cr3t-from-file\n")
    monkeypatch.setenv("AIGW_TEST_TEAM", "blue")
    loaded = load_config_text(
        f"""
named-values:
  team: {{env: AIGW_TEST_TEAM}}
  key: {{file: {secret_file}, secret: true}}
backends: {{b: {{url: "http://127.0.0.1:9"}}}}
apis:
  chat:
    type: openai
    backend: b
    policies:
      inbound:
        - set-header: {{name: x-team, value: "team-{{{{team}}}}"}}
        - set-header: {{name: api-key, value: "{{{{key}}}}"}}
"""
    )
    inbound = loaded.config.apis["chat"].policies.inbound
    assert inbound is not None
    assert inbound[0]["set-header"]["value"] == "team-blue"
    assert inbound[1]["set-header"]["value"] == "s3cr3t-from-file"
    assert loaded.secrets == frozenset({"s3cr3t-from-file"})


def test_missing_named_value_and_env_are_reported(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AIGW_TEST_UNSET", raising=False)
    found = issues_of(
        """
named-values:
  k: {env: AIGW_TEST_UNSET, secret: true}
backends: {b: {url: "http://127.0.0.1:9"}}
apis:
  chat:
    type: openai
    backend: b
    policies:
      inbound:
        - set-header: {name: x, value: "{{nope}}"}
"""
    )
    assert found["named-values.k"] == "environment variable 'AIGW_TEST_UNSET' is not set"
    assert found["apis.chat.policies.inbound[0].set-header.value"] == (
        "named value '{{nope}}' is not defined"
    )


def test_inline_secret_is_refused() -> None:
    found = issues_of("named-values:\n  k: {value: abc, secret: true}\n")
    assert "named-values.k" in found


def test_every_example_config_is_valid(monkeypatch: pytest.MonkeyPatch) -> None:
    # The examples reference secrets by environment variable, as a deployment would.
    monkeypatch.setenv("AZURE_OPENAI_API_KEY", "example-key")
    monkeypatch.setenv("VLLM_TOKEN", "example-token")
    examples = sorted(Path(__file__).resolve().parents[2].joinpath("examples").glob("*.yaml"))
    assert examples, "examples/ holds at least one config"
    for example in examples:
        build_runtime(load_config(example))


def test_a_store_url_the_store_refuses_is_a_config_error_with_its_path() -> None:
    found = issues_of(
        """
store: {url: "postgresql://aigw@db.internal:5432/aigw?schema=Bad-Name"}
backends: {b: {url: "http://127.0.0.1:9"}}
apis:
  chat: {type: openai, backend: missing}
"""
    )
    assert "schema name" in found["store.url"]
    assert "apis.chat.backend" in found  # reported together with the other problems


RULE = "name: r, failure-condition: {count: 1, status-code-ranges: [429]"


@pytest.mark.parametrize(
    "rule",
    [
        RULE + "}, trip-duration: .inf",
        RULE + "}, max-retry-after: 1e15",
        RULE + ", interval: .nan}",
    ],
)
def test_breaker_durations_must_be_finite_and_bounded(rule: str) -> None:
    text = f"backends:\n  b: {{url: 'http://a', circuit-breaker: {{rules: [{{{rule}}}]}}}}\n"
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert "backends.b.circuit-breaker.rules" in str(caught.value.issues[0])


@pytest.mark.parametrize(
    ("url", "ok"),
    [
        ("https://login.example/token", True),
        ("http://127.0.0.1:9000/token", True),
        ("http://idp.internal/token", False),
    ],
)
def test_client_credentials_never_travel_in_clear_text(url: str, ok: bool) -> None:
    credentials = (
        f"{{client-credentials: {{token-url: '{url}', client-id: a, client-assertion-file: /f}}}}"
    )
    text = f"backends:\n  b: {{url: 'http://a', credentials: {credentials}}}\n"
    if ok:
        load_config_text(text)
        return
    with pytest.raises(ConfigError) as caught:
        load_config_text(text)
    assert "https://" in str(caught.value.issues[0])


@pytest.mark.parametrize(
    ("url", "problem"),
    [
        ("http://user:secret@llm.internal/v1", "must not hold a user or password"),
        ("http://llm.internal:99999", "invalid port"),
        ("https://llm.internal:8443/openai/", None),
        ("http://[::1]:8000", None),
    ],
)
def test_backend_urls_carry_no_secret_and_a_valid_port(url: str, problem: str | None) -> None:
    text = f"backends:\n  b: {{url: '{url}'}}\n"
    if problem is None:
        runtime = build_runtime(load_config_text(text))
        assert runtime.config.backends["b"].url == url
    else:
        found = issues_of(text)
        assert problem in found["backends.b"], found


@pytest.mark.parametrize(
    "url", ["https://fn.example/api?code=abc", "https://fn.example/api?", "https://fn.example/#x"]
)
def test_a_backend_url_with_a_query_or_fragment_is_refused(url: str) -> None:
    # Requests go to the URL's path only: the query would be dropped without a word.
    found = issues_of(f"backends:\n  b: {{url: '{url}'}}\n")
    assert "must not have a query string or fragment" in found["backends.b.url"], found
    assert "abc" not in str(found)
