"""Secret named values never reach a log line; access lines are JSON without secrets."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from aigw.accesslog import AccessLog
from aigw.logs import JsonFormatter, set_log_secrets
from tests.unit.policies.conftest import make_ctx


@pytest.fixture
def captured() -> Iterator[tuple[logging.Logger, io.StringIO, JsonFormatter]]:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    formatter = JsonFormatter(["sk-very-secret-value", 'quo"ted-secret'])
    handler.setFormatter(formatter)
    root = logging.getLogger()
    root.addHandler(handler)
    logger = logging.getLogger("aigw.test.redact")
    try:
        yield logger, stream, formatter
    finally:
        root.removeHandler(handler)


def test_secrets_are_masked_in_message_extras_and_tracebacks(
    captured: tuple[logging.Logger, io.StringIO, JsonFormatter],
) -> None:
    logger, stream, _ = captured
    logger.warning("backend said %s", "invalid key sk-very-secret-value")
    logger.error("reload failed", extra={"issues": ['x: bad value quo"ted-secret']})
    try:
        raise ValueError("token sk-very-secret-value rejected")
    except ValueError:
        logger.exception("boom")
    text = stream.getvalue()
    assert "sk-very-secret-value" not in text
    assert "quo" not in text  # the JSON-escaped spelling is masked too
    lines = [json.loads(line) for line in text.splitlines()]
    assert lines[0]["message"] == "backend said invalid key ***"
    assert lines[1]["issues"] == ["x: bad value ***"]
    assert "***" in lines[2]["exception"]


def test_secrets_of_a_reloaded_config_are_masked_too(
    captured: tuple[logging.Logger, io.StringIO, JsonFormatter],
) -> None:
    logger, stream, _ = captured
    set_log_secrets(["new-secret-2"])
    logger.error("saw sk-very-secret-value and new-secret-2")
    assert json.loads(stream.getvalue())["message"] == "saw *** and ***"


def test_access_line_is_json_with_request_facts_only() -> None:
    out = io.StringIO()
    log = AccessLog(out)
    ctx = make_ctx(headers=[("api-key", "sekret-123")])
    ctx.backend_id = "primary"
    log.write(
        ctx,
        request_id="r1",
        method="POST",
        path="/v1/chat/completions",
        status=200,
        duration=0.0123,
    )
    record = json.loads(out.getvalue())
    assert record["request_id"] == "r1"
    assert record["status"] == 200
    assert record["duration_ms"] == 12.3
    assert record["backend"] == "primary"
    assert "sekret-123" not in out.getvalue()
