"""Backends built from config: breakers on singles, pools sharing their members' breakers,
and the config errors a pool can have."""

from __future__ import annotations

from pathlib import Path

import pytest

from aigw.backends.guarded import GuardedBackend
from aigw.backends.pool import PoolBackend
from aigw.backends.shared import BreakerSync
from aigw.config.errors import ConfigError
from aigw.config.loader import load_config_text
from aigw.runtime import build_runtime

CONFIG = """
backends:
  ptu:
    url: http://127.0.0.1:9/openai
    circuit-breaker:
      rules:
        - name: throttled
          failure-condition: {count: 1, interval: 10, status-code-ranges: [429, "500-599"]}
          trip-duration: 10
          accept-retry-after: true
          max-retry-after: 60
  payg: {url: "http://127.0.0.1:9/payg"}
  demo: {type: demo}
  main:
    type: pool
    pool:
      members:
        - {backend: ptu, priority: 1}
        - {backend: payg, priority: 2, weight: 3}
  other:
    type: pool
    pool: {members: [{backend: ptu}, {backend: demo}], max-attempts: 1}
apis: {chat: {type: openai, backend: main, subscription-required: false}}
"""


def test_pools_share_the_guarded_members_of_the_runtime(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    backends = build_runtime(load_config_text(CONFIG)).services.backends
    ptu, payg, demo, main, other = (
        backends[name] for name in ("ptu", "payg", "demo", "main", "other")
    )
    assert isinstance(ptu, GuardedBackend) and ptu.breaker.has_rules
    assert isinstance(payg, GuardedBackend) and not payg.breaker.has_rules
    assert isinstance(demo, GuardedBackend) and demo.kind == "demo"
    assert isinstance(main, PoolBackend) and isinstance(other, PoolBackend)
    # One breaker per backend, whichever way the request came.
    assert main.members[0] is ptu and other.members[0] is ptu
    assert ptu.status()["url"] == "http://127.0.0.1:9/openai"
    assert other.status()["maxAttempts"] == 1


@pytest.mark.parametrize(
    ("backends", "path", "message"),
    [
        (
            "{p: {type: pool, pool: {members: [{backend: nope}]}}}",
            "backends.p.pool.members[0].backend",
            "not defined",
        ),
        (
            "{a: {url: 'http://x'}, q: {type: pool, pool: {members: [{backend: a}]}},"
            " p: {type: pool, pool: {members: [{backend: q}]}}}",
            "backends.p.pool.members[0].backend",
            "not pools",
        ),
        (
            "{a: {url: 'http://x'}, p: {type: pool, url: 'http://y', "
            "pool: {members: [{backend: a}]}}}",
            "backends.p",
            "no 'url' or 'circuit-breaker'",
        ),
        ("{p: {type: pool}}", "backends.p", "needs 'pool'"),
        (
            "{a: {url: 'http://x', circuit-breaker: {rules: [{name: r, failure-condition: "
            "{count: 1, percentage: 5, status-code-ranges: [429]}}]}}}",
            "backends.a.circuit-breaker.rules[0].failure-condition",
            "exactly one of",
        ),
        (
            "{a: {url: 'http://x', circuit-breaker: {shared: true, rules: [{name: r, "
            "failure-condition: {count: 1, status-code-ranges: [429]}}]}}}",
            "backends.a.circuit-breaker.shared",
            "set 'counters.url'",
        ),
        ("{d: {type: demo, health-check: {path: /healthz}}}", "backends.d", "only an http"),
        (
            "{a: {url: 'http://x', health-check: {path: 'healthz'}}}",
            "backends.a.health-check.path",
            "should match pattern",
        ),
        (
            "{a: {url: 'http://x', health-check: {expected-status: []}}}",
            "backends.a.health-check.expected-status",
            "at least 1",
        ),
    ],
)
def test_pool_and_breaker_config_errors(
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    backends: str,
    path: str,
    message: str,
) -> None:
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ConfigError) as caught:
        build_runtime(load_config_text(f"backends: {backends}\n"))
    issues = {issue.path: issue.message for issue in caught.value.issues}
    assert path in issues, issues
    assert message in issues[path]


SHARED_AND_PROBED = """
counters: {url: "redis://127.0.0.1:6379/0", breaker-poll-interval: 0.25}
backends:
  ptu:
    url: http://127.0.0.1:9/openai
    circuit-breaker:
      shared: true
      rules: [{name: r, failure-condition: {count: 1, status-code-ranges: [429]}}]
    health-check: {path: /healthz, interval: 2, expected-status: [200, "204"]}
  payg:
    url: http://127.0.0.1:9/payg
    circuit-breaker: {rules: [{name: r, failure-condition: {count: 1, status-code-ranges: [429]}}]}
"""


def test_shared_breakers_join_one_sync_and_probed_backends_get_a_health_check(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    runtime = build_runtime(load_config_text(SHARED_AND_PROBED))
    ptu, payg = (runtime.services.backends[name] for name in ("ptu", "payg"))
    assert isinstance(ptu, GuardedBackend) and isinstance(payg, GuardedBackend)
    syncs = [r for r in runtime.resources if isinstance(r, BreakerSync)]
    assert len(syncs) == 1 and syncs[0].interval == 0.25
    assert ptu.shared is not None and ptu.shared.sync is syncs[0]
    assert ptu.breaker.on_change is not None
    assert payg.shared is None and payg.breaker.on_change is None
    assert ptu.health is not None and payg.health is None
    status = ptu.status()
    assert status["shared"]["sync"] == "starting" and status["shared"]["record"] is None
    assert status["healthCheck"]["healthy"] is True
    assert payg.status()["shared"] is None and payg.status()["healthCheck"] is None


def test_no_sync_without_a_shared_breaker(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    runtime = build_runtime(load_config_text(SHARED_AND_PROBED.replace("shared: true", "")))
    assert not any(isinstance(r, BreakerSync) for r in runtime.resources)
