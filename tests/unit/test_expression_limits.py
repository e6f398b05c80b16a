"""Resource limits of policy expressions: bounded work at load, bounded strings per request."""

from __future__ import annotations

import gc
import time
import tracemalloc
from collections.abc import Callable
from typing import Any

import pytest

from aigw.errors import ExpressionEvaluationFailure
from aigw.expressions import ExpressionError, compile_value
from aigw.headers import Headers
from tests.unit.test_expressions import bare_context

TOO_LONG = "string result longer than 65536 characters"


def rejection(text: str) -> ExpressionError:
    with pytest.raises(ExpressionError) as info:
        compile_value(text)
    return info.value


def measured(action: Callable[[], Any]) -> tuple[Any, int, int]:
    """`action()`, the bytes it left allocated, and its peak allocation."""
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.get_traced_memory()[0]
        result = action()
        gc.collect()
        after, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return result, after - before, peak - before


def failure_detail(text: str, **headers: str) -> str:
    ctx = bare_context()
    for name, value in headers.items():
        ctx.request.headers.add(name, value)
    with pytest.raises(ExpressionEvaluationFailure) as info:
        compile_value(text).evaluate(ctx)
    assert info.value.message == "Policy expression could not be evaluated"
    assert isinstance(info.value.detail, str)
    return info.value.detail


# Config load


def test_expression_source_is_capped_at_4096_characters() -> None:
    padding = "x" * (4096 - len('@("")'))
    assert compile_value(f'@("{padding}")').evaluate(bare_context()) == padding
    error = rejection(f'@("{padding}x")')
    assert (error.message, error.position) == ("expression is longer than 4096 characters", 1)
    # Literal text is not an expression and keeps no such limit.
    assert compile_value("x" * 10_000).is_constant


def test_long_postfix_chain_is_rejected_cheaply() -> None:
    # Before the limits, 20,000 steps took 3.3 GB: each step copied its receiver's text.
    text = "@(context.RequestId" + ".ToString()" * 2_000 + ")"
    started = time.perf_counter()
    error, _, peak = measured(lambda: rejection(text))
    assert error.message == "expression is longer than 4096 characters"
    assert peak < 1_000_000
    assert time.perf_counter() - started < 1.0


def test_postfix_steps_count_against_the_operator_limit() -> None:
    within = "@(context.RequestId" + ".ToString()" * 99 + ")"  # 100 with .RequestId
    assert compile_value(within).evaluate(bare_context()) == "req-1"
    error = rejection("@(context.RequestId" + ".ToString()" * 100 + ")")
    assert error.message == "expression has more than 100 operators"
    assert error.position == len("@(context.RequestId" + ".ToString()" * 99) + 1
    indexers = "@(context.RequestId" + '.Split(",")[0]' * 50 + ")"  # 1 + 2 * 50 steps
    assert rejection(indexers).message == "expression has more than 100 operators"


def test_compiled_steps_do_not_copy_their_receiver_text() -> None:
    def compiled(key_length: int) -> int:
        text = '@(context.Variables["' + "k" * key_length + '"]' + ".ToString()" * 90 + ")"
        assert len(text) <= 4096
        value, retained, _ = measured(lambda: compile_value(text))
        assert value.source == text
        return retained

    # The long key is kept a few times (source, literal, message); never once per step.
    assert compiled(3_000) - compiled(10) < 40_000


def test_receiver_text_still_names_the_null_receiver() -> None:
    text = '@(context.Subscription.Name.Replace("a", "b").ToUpper())'
    assert failure_detail(text) == f"Expression {text} failed: context.Subscription is null"


@pytest.mark.parametrize("digits", [33, 4_301])
def test_long_number_literal_is_an_expression_error(digits: int) -> None:
    error = rejection("@(" + "1" * digits + ")")
    if digits < 4096:
        assert (error.message, error.position) == ("number literal is too long", 3)
    else:
        assert error.message == "expression is longer than 4096 characters"


def test_number_literals_up_to_32_characters_are_accepted() -> None:
    assert compile_value("@(" + "9" * 32 + ")").evaluate(bare_context()) == int("9" * 32)
    assert compile_value("@(1." + "5" * 30 + ")").evaluate(bare_context()) == float("1." + "5" * 30)
    error = rejection("@(1 + 1." + "5" * 31 + ")")
    assert (error.message, error.position) == ("number literal is too long", 7)


# Strings built per request from client input


def test_concatenation_is_capped() -> None:
    half = "a" * 32_768
    text = '@(context.Request.Headers["X-Big"] + context.Request.Headers["X-Big"])'
    ctx = bare_context()
    ctx.request.headers.add("X-Big", half)
    assert compile_value(text).evaluate(ctx) == half * 2  # exactly 65,536 is allowed
    tripled = '@(context.Request.Headers["X-Big"] + context.Request.Headers["X-Big"] + "a")'
    assert failure_detail(tripled, **{"X-Big": half}).endswith(TOO_LONG)


def test_dynamic_concatenation_is_capped() -> None:
    ctx = bare_context()
    ctx.variables["big"] = "b" * 40_000
    with pytest.raises(ExpressionEvaluationFailure) as info:
        compile_value('@(context.Variables["big"] + context.Variables["big"])').evaluate(ctx)
    assert (info.value.detail or "").endswith(TOO_LONG)


def test_replace_is_capped_before_building_the_string() -> None:
    # "aaa…".Replace("a", itself) would be len² characters: 4 MiB here, 1 GiB for 32 KiB.
    text = '@(context.Request.Headers["H"].Replace("a", context.Request.Headers["H"]))'
    detail, _, peak = measured(lambda: failure_detail(text, H="a" * 2_048))
    assert detail.endswith(TOO_LONG)
    assert peak < 1_000_000
    ctx = bare_context()
    ctx.request.headers.add("H", "a" * 256)
    assert compile_value(text).evaluate(ctx) == "a" * 65_536


@pytest.mark.parametrize(
    ("method", "value"),
    [
        ("ToUpper()", "ß" * 40_000),  # "SS" each: 80,000 characters
        ("ToUpperInvariant()", "ß" * 40_000),
        ("ToLower()", "A" * 70_000),
        ("Trim()", " " + "a" * 70_000),
        ("Substring(1)", "a" * 70_000),
        ("ToString()", "a" * 70_000),
        ('Replace("aa", "b")', "a" * 140_000),
    ],
)
def test_string_methods_are_capped(method: str, value: str) -> None:
    ctx = bare_context()
    ctx.variables["v"] = value
    with pytest.raises(ExpressionEvaluationFailure) as info:
        compile_value(f'@(context.Variables["v"].{method})').evaluate(ctx)
    assert (info.value.detail or "").endswith(TOO_LONG)


def test_strings_within_the_cap_are_unaffected() -> None:
    ctx = bare_context()
    ctx.variables["v"] = "ß" * 30_000
    assert compile_value('@(context.Variables["v"].ToUpper())').evaluate(ctx) == "SS" * 30_000
    ctx.request.headers = Headers([("X-Big", "x" * 70_000)])
    # Reading a long input is not building a string: only results of operations are capped.
    assert compile_value('@(context.Request.Headers["X-Big"].Length)').evaluate(ctx) == 70_000
