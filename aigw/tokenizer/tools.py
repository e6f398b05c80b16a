"""Prompt tokens of function (tool) definitions.

Providers render tool definitions into the prompt in a private format, so this is an
estimate built from overheads that match what OpenAI bills for gpt-4o class models within a
few tokens (and cl100k models with a larger per-function overhead):

- each function: `FUNCTION_OVERHEAD` (7 for o200k_base, 10 for cl100k_base) plus the tokens
  of `"{name}:{description}"` (a description's final period is dropped);
- a function with parameter properties: `PROPERTIES_OVERHEAD` (3) once, then for each
  property `PROPERTY_OVERHEAD` (3) plus the tokens of `"{key}:{type}:{description}"`;
- a property with an `enum`: `ENUM_OVERHEAD` (-3) once, then per value `ENUM_VALUE_OVERHEAD`
  (3) plus the value's tokens;
- nested object properties (and the object items of arrays) count their own properties the
  same way, one level deeper;
- the whole tool list: `TOOLS_OVERHEAD` (12) once.

Chat Completions nest the function under `{"type": "function", "function": {...}}`, the
legacy `functions` list and the Responses API put it at the top level; other tool types
(built-in tools) are not counted.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any, Final

from aigw.tokenizer.encodings import CL100K
from aigw.tokenizer.parts import PromptParts

FUNCTION_OVERHEAD: Final = 7
FUNCTION_OVERHEAD_CL100K: Final = 10
PROPERTIES_OVERHEAD: Final = 3
PROPERTY_OVERHEAD: Final = 3
ENUM_OVERHEAD: Final = -3
ENUM_VALUE_OVERHEAD: Final = 3
TOOLS_OVERHEAD: Final = 12
# Deeper schemas are rare and each level is cheap to skip; this also bounds the recursion.
MAX_SCHEMA_DEPTH: Final = 8


def add_tools(parts: PromptParts, tools: object) -> None:
    """Add a `tools` or `functions` list (either shape); anything malformed adds nothing."""
    if not isinstance(tools, list):
        return
    functions = [function for tool in tools if (function := _function_of(tool)) is not None]
    if not functions:
        return
    overhead = FUNCTION_OVERHEAD_CL100K if parts.encoding == CL100K else FUNCTION_OVERHEAD
    for function in functions:
        parts.tokens(overhead)
        name = function.get("name")
        parts.text(f"{name if isinstance(name, str) else ''}:{_description(function)}")
        parameters = function.get("parameters")
        if isinstance(parameters, Mapping):
            _add_properties(parts, parameters.get("properties"), 0)
    parts.tokens(TOOLS_OVERHEAD)


def _function_of(tool: object) -> Mapping[str, Any] | None:
    if not isinstance(tool, Mapping):
        return None
    nested = tool.get("function")
    if isinstance(nested, Mapping):
        return nested
    kind = tool.get("type")
    if (kind is None or kind == "function") and isinstance(tool.get("name"), str):
        return tool
    return None


def _description(schema: Mapping[str, Any]) -> str:
    description = schema.get("description")
    if not isinstance(description, str):
        return ""
    return description.removesuffix(".")


def _add_properties(parts: PromptParts, properties: object, depth: int) -> None:
    if not isinstance(properties, Mapping) or not properties or depth >= MAX_SCHEMA_DEPTH:
        return
    parts.tokens(PROPERTIES_OVERHEAD)
    for key, schema in properties.items():
        parts.tokens(PROPERTY_OVERHEAD)
        if not isinstance(schema, Mapping):
            parts.text(f"{key}::")
            continue
        parts.text(f"{key}:{_type_name(schema.get('type'))}:{_description(schema)}")
        enum = schema.get("enum")
        if isinstance(enum, list):
            parts.tokens(ENUM_OVERHEAD)
            for value in enum:
                parts.tokens(ENUM_VALUE_OVERHEAD)
                parts.text(value if isinstance(value, str) else json.dumps(value))
        _add_properties(parts, schema.get("properties"), depth + 1)
        items = schema.get("items")
        if isinstance(items, Mapping):
            _add_properties(parts, items.get("properties"), depth + 1)


def _type_name(value: object) -> str:
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # e.g. ["string", "null"]
        return ",".join(item for item in value if isinstance(item, str))
    return ""
