from __future__ import annotations

from typing import Any

import pytest

from aigw.errors import GatewayError
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].check-header"


def config(**extra: Any) -> dict[str, Any]:
    return {
        "name": "X-Env",
        "failed-check-httpcode": 401,
        "failed-check-error-message": "Not allowed",
        **extra,
    }


def rejection(attributes: dict[str, Any], headers: list[tuple[str, str]]) -> GatewayError:
    with pytest.raises(GatewayError) as info:
        run(build_one("check-header", attributes), make_ctx(headers=headers))
    return info.value


def passes(attributes: dict[str, Any], headers: list[tuple[str, str]]) -> bool:
    return run(build_one("check-header", attributes), make_ctx(headers=headers)) is None


def test_missing_header_is_rejected_with_the_configured_code_and_message() -> None:
    error = rejection(config(), [("other", "1")])
    assert (error.status_code, error.reason, error.message, error.source) == (
        401,
        "HeaderNotFound",
        "Not allowed",
        "check-header",
    )


def test_presence_only_check_passes_with_any_value() -> None:
    assert passes(config(), [("x-env", "")])


def test_value_not_allowed() -> None:
    error = rejection(config(value=["prod", "test"]), [("x-env", "dev")])
    assert (error.status_code, error.reason, error.message) == (
        401,
        "HeaderValueNotAllowed",
        "Not allowed",
    )


def test_allowed_value_passes_case_sensitively_by_default() -> None:
    assert passes(config(value=["prod", "test"]), [("X-ENV", "test")])
    assert rejection(config(value=["prod"]), [("x-env", "PROD")]).reason == "HeaderValueNotAllowed"


def test_ignore_case() -> None:
    assert passes(config(value=["Prod"], **{"ignore-case": True}), [("x-env", "pROD")])
    assert (
        rejection(config(value=["Prod"], **{"ignore-case": True}), [("x-env", "dev")]).status_code
        == 401
    )


@pytest.mark.parametrize(
    "headers",
    [[("x-env", "dev"), ("x-env", "prod")], [("x-env", "dev, prod")], [("x-env", "prod,dev")]],
)
def test_multi_valued_header_passes_if_any_value_is_allowed(headers: list[tuple[str, str]]) -> None:
    assert passes(config(value="prod"), headers)


def test_multi_valued_header_with_no_allowed_value_fails() -> None:
    assert (
        rejection(config(value="prod"), [("x-env", "dev, test"), ("x-env", "qa")]).reason
        == "HeaderValueNotAllowed"
    )


def test_config_errors() -> None:
    assert set(issues_of("check-header", {"name": "x"})) == {
        f"{P}.failed-check-httpcode",
        f"{P}.failed-check-error-message",
    }
    assert list(issues_of("check-header", config(**{"failed-check-httpcode": 200}))) == [
        f"{P}.failed-check-httpcode"
    ]
    assert list(issues_of("check-header", config(**{"ignore-case": "sometimes"}))) == [
        f"{P}.ignore-case"
    ]
    assert list(issues_of("check-header", config(values=["a"]))) == [f"{P}.values"]
    assert list(build([{"check-header": config()}], "outbound")[1]) == ["policies.outbound[0]"]


def test_describe_does_not_print_allowed_values() -> None:
    policy = build_one("check-header", config(value=["s3cret"], **{"ignore-case": True}))
    assert policy.describe() == "check-header x-env, 1 allowed values, ignore-case -> 401"
