"""Text rendering of the compiled runtime for `aigw validate`."""

from __future__ import annotations

from collections.abc import Sequence

from aigw.policies.base import SECTIONS, Policy
from aigw.runtime import OperationTarget, Runtime


def _lines(policies: Sequence[Policy], indent: str) -> list[str]:
    out: list[str] = []
    for policy in policies:
        out.append(f"{indent}- {policy.describe()}")
        for label, nested in policy.children():
            out.append(f"{indent}    {label}:")
            out.extend(_lines(nested, indent + "      "))
    return out


def _access(target: OperationTarget) -> str:
    gate = target.gate
    if not gate.required:
        text = "not required (keys are ignored)"
    else:
        text = (
            f"required; key in header {gate.location.header!r}, "
            f"else query parameter {gate.location.query!r}"
        )
    if gate.open_product is not None:
        text += f"; calls without a key run in open product {gate.open_product.id!r}"
    return text


def describe_runtime(runtime: Runtime) -> str:
    config = runtime.config
    out = [
        f"config OK: {len(config.apis)} api(s), {len(config.backends)} backend(s), "
        f"{len(config.products)} product(s)"
    ]
    for route in runtime.router.routes():
        target: OperationTarget = route.target
        prefix = f"/{route.api.path}" if route.api.path else ""
        out.append("")
        out.append(
            f"{route.method} {prefix}{route.operation.url_template}  "
            f"api={route.api.id} operation={route.operation.id} "
            f"backend={target.default_backend or '-'}"
        )
        out.append(f"  subscription: {_access(target)}")
        for product_id, chain in target.chains.items():
            if product_id is not None:
                out.append(f"  in product {product_id} (requests in its context):")
            indent = "    " if product_id is not None else "  "
            for section in SECTIONS:
                statements = chain.section(section)
                out.append(f"{indent}{section}:" + ("" if statements else " (empty)"))
                out.extend(_lines(statements, indent + "  "))
    return "\n".join(out)
