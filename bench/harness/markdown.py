"""Markdown rendering of the results: one table per scenario, process stats, and the checks."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from harness.report import GATEWAYS, Check

SCENARIO_TITLES = {
    "json": "JSON: `POST /v1/chat/completions`",
    "stream": 'Streaming (SSE): `POST /v1/chat/completions` with `"stream": true`',
}


def _num(value: Any, digits: int = 3) -> str:
    if value is None:
        return "—"
    if digits == 0:
        return f"{value:,.0f}"
    return f"{value:.{digits}f}"


def _short(value: float, unit: str) -> str:
    if unit == "requests":
        return f"{value:,.0f}"
    if unit == "ms" and abs(value) < 10:
        return f"{value:.3f}"
    if unit == "%" and 0 < abs(value) < 1:  # an error rate: 0.004 % is not 0.0 %
        return f"{value:.3f}"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:.1f}"


def _table(header: list[str], rows: list[list[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    return lines + ["| " + " | ".join(row) + " |" for row in rows]


def _load_row(name: str, result: Mapping[str, Any], stream: bool) -> list[str]:
    runs = result.get("runs", {})
    cells = [name]
    for run in ("c1", "c16"):
        r = runs.get(run, {})
        cells += [_num(r.get("rps"), 0), _num(r.get("p50_ms")), _num(r.get("p99_ms"))]
    if stream:
        cells.append(_num((result.get("ttfb") or {}).get("p50_ms")))
    return [*cells, str(result.get("status", "—")).replace("|", "/")[:160]]


def _process_rows(scenario: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, result in scenario.items():
        if result.get("ready_ms") is None:
            continue
        soak = result.get("soak") or {}
        rows.append(
            [
                name,
                _num(result.get("ready_ms"), 0),
                _num((result.get("rss_idle") or {}).get("total_mb"), 1),
                _num((result.get("rss_after_c16") or {}).get("total_mb"), 1),
                _num((result.get("rss_after_c16") or {}).get("largest_mb"), 1),
                _num(soak.get("requests"), 0) if soak else "—",
                _num(soak.get("growth_mb"), 1) if soak else "—",
            ]
        )
    return rows


def _backend_rows(scenarios: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for label, scenario in scenarios.items():
        for name, result in scenario.items():
            for backend, state in (result.get("backends") or {}).items():
                trip = state["last_trip"]
                rows.append(
                    [
                        label,
                        name,
                        backend,
                        _num(state["requests"], 0),
                        _num(state["failures"], 0),
                        state["state"],
                        "never" if trip is None else f"{trip['rule']}: {trip['cause']}",
                    ]
                )
            if error := result.get("backends_error"):
                rows.append([label, name, "—", "—", "—", "—", str(error)[:160]])
    return rows


def _check_rows(checks: list[Check]) -> list[list[str]]:
    by_name: dict[str, dict[str, Check]] = {}
    for check in checks:
        by_name.setdefault(check.name, {})[check.gateway] = check
    rows = []
    for name, per_gateway in by_name.items():
        first = next(iter(per_gateway.values()))
        cells = [name, first.goal]
        for gateway in GATEWAYS:
            c = per_gateway.get(gateway)
            if c is None or (c.value is None and c.passed is not False):
                cells.append("—")
            elif c.value is None:  # the check could not be made
                cells.append("**FAIL**")
            else:
                verdict = "pass" if c.passed else "info" if c.informational else "**FAIL**"
                cells.append(f"{_short(c.value, c.unit)} {c.unit} {verdict}")
        rows.append([*cells, first.basis])
    return rows


def _tokenizer_rows(scenario: Mapping[str, Any]) -> list[list[str]]:
    rows = []
    for name, result in scenario.items():
        tokenizer = (result.get("token_limit") or {}).get("tokenizer")
        if not tokenizer:
            continue
        for label, key in (("chat body (`prompt_tokens`)", "prompt"), ("100 KB text", "text_100k")):
            t = tokenizer[key]
            rows.append(
                [
                    name,
                    f"{label}, {t['bytes']:,} bytes",
                    f"{t['tokens']:,}",
                    f"{t['first_us']:,.0f} ({t['first_tokens_per_s'] / 1e6:.1f} M/s)",
                    f"{t['p50_us']:,.1f} ({t['tokens_per_s'] / 1e6:.1f} M/s)",
                    f"{tokenizer['encoding']}, loaded in {tokenizer['load_ms']:,.0f} ms",
                ]
            )
    return rows


def _subtitle(results: Mapping[str, Any]) -> str:
    meta, settings = results.get("meta", {}), results.get("settings", {})
    parts = [
        str(meta.get("finished", "")),
        f"{meta.get('cpus', '?')} CPUs",
        str(meta.get("nginx", "")),
        str(meta.get("wrk", "")),
        f"{settings.get('duration')} s per run, wrk -t1 -c1 and -t2 -c16",
    ]
    if results.get("interrupted"):
        parts.append("**INTERRUPTED: partial results**")
    return " · ".join(p for p in parts if p)


def render(results: Mapping[str, Any], checks: list[Check]) -> str:
    out = [
        "# aigw benchmark",
        "",
        _subtitle(results),
    ]
    load_header = [
        "target",
        "rps c=1",
        "p50 c=1 (ms)",
        "p99 c=1 (ms)",
        "rps c=16",
        "p50 c=16 (ms)",
        "p99 c=16 (ms)",
    ]
    for label, scenario in results.get("scenarios", {}).items():
        stream = label == "stream"
        header = load_header + (["TTFB p50 c=1 (ms)"] if stream else []) + ["status"]
        rows = [_load_row(name, result, stream) for name, result in scenario.items()]
        out += ["", f"## {SCENARIO_TITLES.get(label, label)}", "", *_table(header, rows)]
    process_rows = _process_rows(results.get("scenarios", {}).get("json", {}))
    if process_rows:
        header = [
            "target",
            "ready (ms)",
            "RSS idle (MB)",
            "RSS after c=16 (MB)",
            "largest process (MB)",
            "soak requests",
            "RSS growth over soak (MB)",
        ]
        out += ["", "## Processes (JSON scenario)", "", *_table(header, process_rows)]
    tokenizer_rows = _tokenizer_rows(results.get("scenarios", {}).get("json", {}))
    if tokenizer_rows:
        header = [
            "target",
            "counted",
            "tokens",
            "first count, µs (tokens/s)",
            "repeated, p50 µs (tokens/s)",
            "encoding",
        ]
        title = "## Tokenizer (aigw.tokenizer in-process, one thread)"
        out += ["", title, "", *_table(header, tokenizer_rows)]
    backend_rows = _backend_rows(results.get("scenarios", {}))
    if backend_rows:
        header = [
            "scenario",
            "target",
            "backend",
            "requests",
            "failed (429, 5xx, no answer)",
            "breaker",
            "last trip",
        ]
        title = "## Pool members (admin API after the c=16 run; counts since start)"
        out += ["", title, "", *_table(header, backend_rows)]
    if checks:
        header = ["check", "goal", *GATEWAYS, "compared with"]
        out += ["", "## Project targets", "", *_table(header, _check_rows(checks))]
    return "\n".join(out) + "\n"
