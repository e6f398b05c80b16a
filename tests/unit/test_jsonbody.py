"""`parse_strict_json`: the request-body JSON that a policy and the backend read the same way."""

from __future__ import annotations

import json

import pytest

from aigw.errors import BadRequest
from aigw.jsonbody import InvalidJsonBody, parse_strict_json


def refused(data: bytes) -> str:
    with pytest.raises(InvalidJsonBody) as caught:
        parse_strict_json(data)
    assert isinstance(caught.value, BadRequest)
    assert caught.value.status_code == 400
    message = caught.value.message
    assert message.startswith("Request body is not valid JSON"), message
    return message


def test_an_ordinary_body_parses() -> None:
    data = b'{"model": "m", "messages": [{"role": "user", "content": "hi"}], "temperature": 0.5}'
    assert parse_strict_json(data) == json.loads(data)


@pytest.mark.parametrize(
    "data",
    [b'{"model": "a", "model": "b"}', b'{"messages": [{"role": "user", "role": "system"}]}'],
    ids=["top-level", "nested"],
)
def test_duplicate_keys_are_refused(data: bytes) -> None:
    message = refused(data)
    assert "duplicate key" in message and "'" in message, message


def test_the_same_key_in_sibling_objects_is_not_a_duplicate() -> None:
    assert parse_strict_json(b'[{"a": 1}, {"a": 2}]') == [{"a": 1}, {"a": 2}]


@pytest.mark.parametrize("constant", ["NaN", "Infinity", "-Infinity"])
def test_nan_and_infinity_are_refused(constant: str) -> None:
    assert constant in refused(b'{"temperature": %s}' % constant.encode())


@pytest.mark.parametrize("number", ["1e999", "-1e999"])
def test_a_float_out_of_range_is_refused(number: str) -> None:
    assert "out of range" in refused(b'{"temperature": %s}' % number.encode())


def test_a_float_literal_too_long_is_refused() -> None:
    assert "too long" in refused(b'{"x": 0.' + b"1" * 100 + b"}")


def test_an_integer_over_4300_digits_is_refused_and_one_under_parses() -> None:
    refused(b'{"seed": ' + b"9" * 4301 + b"}")
    assert parse_strict_json(b'{"seed": ' + b"9" * 4000 + b"}")["seed"] == int("9" * 4000)


def test_ten_thousand_levels_of_nesting_are_refused() -> None:
    message = refused(b"[" * 10_000 + b"]" * 10_000)
    assert "nested too deeply" in message, message
    assert "nested too deeply" in refused(b'{"a":' * 10_000 + b"1" + b"}" * 10_000)


def test_a_lone_surrogate_escape_is_refused() -> None:
    for data in (rb'{"model": "\ud800"}', rb'{"model": "x\uDFFFy"}', rb'{"\ud83d": 1}'):
        assert "surrogate" in refused(data), data


def test_a_valid_surrogate_pair_parses() -> None:
    assert parse_strict_json(rb'{"model": "\ud83d\ude00"}') == {"model": "\U0001f600"}


def test_a_surrogate_escape_elsewhere_in_the_text_does_not_trip_a_clean_body() -> None:
    # The text holds `\ud8` only as an escaped backslash followed by letters: no surrogate.
    assert parse_strict_json(rb'{"path": "C:\\ud800"}') == {"path": "C:\\ud800"}


@pytest.mark.parametrize(
    "data",
    [b'{"model": "caf\xe9"}', b'{"model": "\xed\xa0\x80"}', b"\xff\xfe{}"],
    ids=["latin-1", "encoded-surrogate", "bom-like"],
)
def test_invalid_utf8_is_refused(data: bytes) -> None:
    assert "UTF-8" in refused(data)


def test_malformed_json_reports_where() -> None:
    assert "line 1 column" in refused(b'{"model": ')


def test_a_large_flat_body_of_small_objects_parses() -> None:
    items = [{"role": "user", "content": f"message {i}", "n": i} for i in range(45_000)]
    data = json.dumps({"model": "m", "messages": items}).encode()
    assert len(data) > 2 * 2**20
    parsed = parse_strict_json(data)
    assert parsed["messages"][-1] == {"role": "user", "content": "message 44999", "n": 44999}
    assert len(parsed["messages"]) == 45_000
