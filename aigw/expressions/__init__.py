"""APIM-style policy expressions (`@(context.Subscription?.Id ?? "anonymous")`), parsed and
compiled into closures at config load; never evaluated as Python code.

See `aigw.expressions.members` for the supported members and how they map to the context.
"""

from __future__ import annotations

from aigw.expressions.lexer import ExpressionError
from aigw.expressions.value import Value, compile_condition, compile_value, evaluation_failure

__all__ = ["ExpressionError", "Value", "compile_condition", "compile_value", "evaluation_failure"]
