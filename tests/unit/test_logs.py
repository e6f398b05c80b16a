"""Secret named values never reach a log line; access lines are JSON without secrets."""

from __future__ import annotations

import io
import json
import logging

from aigw.accesslog import AccessLog
from aigw.logs import JsonFormatter, RedactSecrets, set_log_secrets
from tests.unit.policies.conftest import make_ctx


def test_secret_values_are_redacted_from_log_lines() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.addFilter(RedactSecrets(["sk-very-secret-value"]))
    logger = logging.getLogger("aigw.test.redact")
    logger.addHandler(handler)
    logger.propagate = False
    try:
        logger.warning("backend said %s", "invalid key sk-very-secret-value")
    finally:
        logger.removeHandler(handler)
    line = json.loads(stream.getvalue())
    assert line["message"] == "backend said invalid key ***"
    assert "sk-very-secret-value" not in stream.getvalue()


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


def test_secrets_of_a_reloaded_config_are_redacted_too() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.addFilter(RedactSecrets(["old-secret-1"]))
    root = logging.getLogger()
    root.addHandler(handler)
    try:
        set_log_secrets(["new-secret-2"])
        logging.getLogger("aigw.test.reload").error("saw old-secret-1 and new-secret-2")
    finally:
        root.removeHandler(handler)
    assert "old-secret-1" not in stream.getvalue()
    assert "new-secret-2" not in stream.getvalue()
    assert stream.getvalue().count("***") == 2
