"""The usage dashboard in headless Chromium (Debian's, driven by Playwright) on a real gateway:
traffic from the `openai` SDK under three subscriptions and anonymously, with token-limit
rejections, then every number the page shows is checked against the ledger's SQLite file.

`AIGW_DASHBOARD_SCREENSHOT=PATH` also saves a 1280x900 screenshot of the page with that data.
"""

from __future__ import annotations

import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from playwright.sync_api import Browser, ConsoleMessage, Page, sync_playwright

from tests.e2e.admin_helpers import TOKEN, TOKEN_ENV, admin_client, admin_config
from tests.e2e.helpers import MODEL, wait_until
from tests.support import DemoBackend, Gateway

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
EURO_MODEL = "demo-model-eu"
UNPRICED_MODEL = "demo-model-unpriced"
HELLO = [{"role": "user", "content": "Hello"}]

pytestmark = pytest.mark.skipif(
    not CHROMIUM.exists(),
    reason="needs Debian's chromium at /usr/bin/chromium (apt-get install chromium)",
)


def limited(**limit: Any) -> dict[str, Any]:
    """A product policy: a token limit per subscription."""
    policy = {"counter-key": "@(context.Subscription.Id)", "estimate-prompt-tokens": True}
    return {"inbound": [{"llm-token-limit": {**policy, **limit}}]}


def dashboard_config(demo_url: str) -> dict[str, Any]:
    """The admin config with the ledger, prices in two currencies, and three products: one
    unlimited, one with a small tokens-per-minute limit, one with a quota too small for any
    request."""
    config = admin_config(demo_url)
    # `OpenAI(api_key=<subscription key>)` sends the key as it is, in Authorization.
    config["apis"]["keyed"]["subscription-key-parameter-names"] = {"header": "Authorization"}
    config["products"] = {
        "premium": {"apis": ["keyed"]},
        "starter": {"apis": ["keyed"], "policies": limited(**{"tokens-per-minute": 60})},
        "capped": {
            "apis": ["keyed"],
            "policies": limited(**{"token-quota": 5, "token-quota-period": "Monthly"}),
        },
    }
    config["usage"] = {
        "ledger": {"url": "sqlite:ledger.db", "flush-interval": 0.2},
        "prices": {
            MODEL: {"input": "2.5", "output": "10"},
            EURO_MODEL: {"input": "1.2", "output": "4.8", "currency": "EUR"},
        },
    }
    return config


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend) -> dict[str, Any]:
    return dashboard_config(demo_backend.url)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, gateway_config: dict[str, Any]
) -> Iterator[Gateway]:
    gw = Gateway(Path(tmp_path_factory.mktemp("dashboard")), gateway_config, env=TOKEN_ENV)
    yield gw
    gw.stop()


@dataclass(frozen=True)
class Traffic:
    ledger: Path
    requests: int  # every call made, answered or refused


def chat(client: openai.OpenAI, model: str = MODEL, max_tokens: int = 10) -> bool:
    """One chat completion; False when the gateway refused it."""
    messages: Any = HELLO
    try:
        client.chat.completions.create(model=model, messages=messages, max_tokens=max_tokens)
    except openai.APIStatusError as exc:
        assert exc.status_code in (403, 429), exc
        return False
    return True


def send_traffic(gateway_url: str, admin: httpx.Client) -> int:
    """Calls from three subscriptions and one anonymous caller; returns how many were made."""
    keys = {}
    for sub, product in [("team-a", "premium"), ("team-b", "starter"), ("team-c", "capped")]:
        body = {"id": sub, "displayName": sub, "product": product}
        reply = admin.post("/subscriptions", json=body)
        assert reply.status_code == 201, reply.text
        keys[sub] = reply.json()["primaryKey"]

    def client(key: str, path: str = "/keyed/v1") -> openai.OpenAI:
        return openai.OpenAI(base_url=gateway_url + path, api_key=key, max_retries=0)

    with client(keys["team-a"]) as team_a:
        for max_tokens in (5, 12, 20):
            assert chat(team_a, max_tokens=max_tokens)
        messages: Any = HELLO
        stream = team_a.chat.completions.create(
            model=MODEL, messages=messages, max_tokens=9, stream=True
        )
        assert list(stream)
        assert chat(team_a, EURO_MODEL, 7) and chat(team_a, EURO_MODEL, 3)
        assert chat(team_a, UNPRICED_MODEL, 4)
    calls = 7
    # team-b runs into its tokens per minute (429), team-c into its quota (403).
    with client(keys["team-b"]) as team_b:
        answered = 0
        while chat(team_b, max_tokens=10):
            answered += 1
            assert answered < 20, "the tokens-per-minute limit never refused"
        assert answered >= 1
        assert not chat(team_b)
    calls += answered + 2
    with client(keys["team-c"]) as team_c:
        assert not chat(team_c) and not chat(team_c)
    calls += 2
    with client("anonymous", "/v1") as anonymous:  # an API without subscriptions
        assert chat(anonymous, max_tokens=6)
    return calls + 1


def wait_for_ledger(admin: httpx.Client, calls: int) -> None:
    """Until the usage report counts every call (the ledger is written in batches)."""

    def flushed() -> bool:
        report = admin.get("/usage/report", params=_range_params("subscription"))
        assert report.status_code == 200, report.text
        totals: list[dict[str, Any]] = report.json()["totals"]
        return sum(int(total["requests"]) for total in totals) == calls

    assert wait_until(flushed, timeout=10, interval=0.2), "the ledger never got every request"


@pytest.fixture(scope="module")
def traffic(gateway: Gateway, gateway_config: dict[str, Any]) -> Traffic:
    with admin_client(gateway_config) as admin:
        calls = send_traffic(gateway.url, admin)
        wait_for_ledger(admin, calls)
    return Traffic(gateway.config_path.parent / "ledger.db", calls)


def _range_params(group_by: str) -> dict[str, str]:
    # Wide enough for a test that runs across midnight UTC.
    now = datetime.now(UTC)
    return {
        "from": (now - timedelta(days=2)).isoformat(),
        "to": (now + timedelta(days=2)).isoformat(),
        "group-by": group_by,
    }


# -- what the ledger holds, read straight from its file -------------------------------------


class Ledger:
    def __init__(self, path: Path) -> None:
        self.path = path

    def query(self, sql: str) -> list[tuple[Any, ...]]:
        with sqlite3.connect(f"file:{self.path}?mode=ro", uri=True) as conn:
            return conn.execute(sql).fetchall()

    def totals(self) -> dict[str, int]:
        row = self.query(
            "SELECT count(*), sum(status >= 400), sum(prompt_tokens), sum(completion_tokens),"
            " sum(total_tokens) FROM usage_records"
        )[0]
        return dict(zip(("requests", "errors", "prompt", "completion", "tokens"), row, strict=True))

    def costs(self, by: str | None = None) -> dict[tuple[str, str], Decimal]:
        """Cost per (key of `by`, currency), exact: the ledger keeps nanos."""
        key = f"coalesce({by}, '')" if by else "''"
        rows = self.query(
            f"SELECT {key}, currency, sum(cost_nanos) FROM usage_records"
            " WHERE currency IS NOT NULL GROUP BY 1, 2"
        )
        return {(name, currency): Decimal(nanos).scaleb(-9) for name, currency, nanos in rows}

    def top_consumers(self) -> list[str]:
        """Subscriptions by cost in the most used currency, then the others, then tokens."""
        currencies = [
            currency
            for (currency,) in self.query(
                "SELECT currency FROM usage_records WHERE currency IS NOT NULL"
                " GROUP BY currency ORDER BY count(*) DESC, currency"
            )
        ]
        costs, tokens = self.costs("subscription_id"), self.by("subscription_id")

        def rank(sub: str) -> tuple[Any, ...]:
            spent = [-costs.get((sub, currency), Decimal(0)) for currency in currencies]
            return (*spent, -tokens[sub], sub)

        return sorted(tokens, key=rank)

    def by(self, column: str, value: str = "sum(total_tokens)") -> dict[str, int]:
        rows = self.query(f"SELECT coalesce({column}, ''), {value} FROM usage_records GROUP BY 1")
        return dict(rows)


# -- the browser ----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Browser]:
    with sync_playwright() as playwright:
        launched = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@dataclass
class Tab:
    page: Page
    console_errors: list[str]
    report_calls: list[str]


def _note_report_call(tab: Tab, url: str) -> None:
    if "/usage/report" in url:
        tab.report_calls.append(url)


@pytest.fixture
def tab(browser: Browser, gateway: Gateway, gateway_config: dict[str, Any]) -> Iterator[Tab]:
    """A fresh tab (its own session storage) on the dashboard."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    page = context.new_page()
    opened = Tab(page, [], [])

    def console(message: ConsoleMessage) -> None:
        if message.type == "error":
            opened.console_errors.append(message.text)

    page.on("console", console)
    page.on("pageerror", lambda error: opened.console_errors.append(str(error)))
    page.on("request", lambda request: _note_report_call(opened, request.url))
    page.goto(f"http://127.0.0.1:{gateway_config['admin']['port']}/dashboard")
    yield opened
    context.close()


def sign_in(page: Page, token: str, state: str = "ready") -> None:
    page.wait_for_selector("body[data-state=login]")
    page.fill("#token", token)
    page.click("#token-form button")
    page.wait_for_selector(f"body[data-state={state}]")


def number(page: Page, selector: str) -> int:
    return int(page.inner_text(selector).replace(",", ""))


def money(page: Page, selector: str) -> Decimal:
    return Decimal(page.inner_text(selector).replace(",", ""))


def cell(table: str, key: str, value: str, field: str) -> str:
    """A number in a table: the row whose `data-KEY` is VALUE, the cell whose field is FIELD."""
    return f'#{table} tr[data-{key}="{value}"] [data-field={field}]'


def series(page: Page, chart: str) -> int:
    return page.locator(f"svg[data-chart={chart}] g[data-series]").count()


# -- tests ----------------------------------------------------------------------------------


def test_without_a_token_the_page_asks_for_it_and_shows_nothing(tab: Tab) -> None:
    page = tab.page
    page.wait_for_selector("body[data-state=login]")
    assert page.is_visible("#token") and page.get_attribute("#token", "type") == "password"
    assert page.is_hidden("#report") and page.is_hidden("#range-form")
    assert page.locator("#totals > *").count() == 0
    assert tab.report_calls == []
    assert tab.console_errors == []


def test_a_wrong_token_shows_the_401_message(tab: Tab) -> None:
    page = tab.page
    sign_in(page, "not-the-admin-token-0123456789", state="unauthorized")
    assert page.inner_text("#error") == "401: missing or invalid admin token"
    # Back to the prompt, the wrong token forgotten, nothing shown.
    assert page.is_visible("#token") and page.is_hidden("#report")
    assert page.evaluate("sessionStorage.length") == 0
    assert page.locator("#totals > *").count() == 0
    # The browser logs the refused fetches; nothing else may fail (a CSP violation would).
    assert all("status of 401" in error for error in tab.console_errors), tab.console_errors


def test_the_numbers_shown_are_the_ledgers(tab: Tab, traffic: Traffic) -> None:
    page, ledger = tab.page, Ledger(traffic.ledger)
    sign_in(page, TOKEN)
    assert "token" not in page.url.lower() and TOKEN not in page.url

    totals = ledger.totals()
    assert totals["requests"] == traffic.requests
    assert number(page, "[data-testid=total-requests]") == totals["requests"]
    assert number(page, "[data-testid=total-errors]") == totals["errors"]
    assert number(page, "[data-testid=total-tokens]") == totals["tokens"]
    assert number(page, "[data-testid=total-prompt-tokens]") == totals["prompt"]
    assert number(page, "[data-testid=total-completion-tokens]") == totals["completion"]
    costs = ledger.costs()
    assert {currency for _, currency in costs} == {"USD", "EUR"}
    for (_, currency), cost in costs.items():
        assert money(page, f"[data-testid=total-cost-{currency}]") == cost

    # Top consumers: one row per subscription (anonymous included), tokens and cost.
    tokens = ledger.by("subscription_id")
    requests = ledger.by("subscription_id", "count(*)")
    assert set(tokens) == {"team-a", "team-b", "team-c", ""}
    shown = page.locator("#consumers tbody tr")
    assert shown.count() == len(tokens)
    for sub, expected in tokens.items():
        assert number(page, cell("consumers", "subscription", sub, "total_tokens")) == expected
        assert number(page, cell("consumers", "subscription", sub, "requests")) == requests[sub]
    sub_costs = ledger.costs("subscription_id")
    for (sub, currency), cost in sub_costs.items():
        assert money(page, cell("consumers", "subscription", sub, f"cost-{currency}")) == cost
    # By cost (the most used currency first), then tokens.
    order = [row.get_attribute("data-subscription") for row in shown.all()]
    assert order == ledger.top_consumers()

    # Rejections by reason: the table and one bar per reason.
    reasons = ledger.by("reason", "count(*)")
    reasons.pop("", None)
    assert set(reasons) == {"TokenLimitExceeded", "TokenQuotaExceeded"}
    assert number(page, "[data-testid=total-rejections]") == sum(reasons.values())
    assert page.locator("#rejections tbody tr").count() == len(reasons)
    for reason, count in reasons.items():
        assert number(page, cell("rejections", "reason", reason, "requests")) == count
        bar = page.locator(f'svg[data-chart=rejections] rect[data-reason="{reason}"]')
        assert bar.get_attribute("data-value") == str(count)

    # Charts: a series (and a legend entry) per subscription that used tokens (team-c only
    # had refusals); the bars add up to the ledger.
    used = {sub: n for sub, n in tokens.items() if n}
    assert set(used) == {"team-a", "team-b", ""}
    assert series(page, "tokens") == len(used)
    assert page.locator("svg[data-chart=tokens] g[data-legend]").count() == len(used)
    assert _series_sums(page, "tokens") == used
    for currency in ("USD", "EUR"):
        spent = {sub for (sub, cur), cost in sub_costs.items() if cur == currency and cost}
        assert series(page, f"cost-{currency}") == len(spent)
    assert tab.console_errors == []

    screenshot = os.environ.get("AIGW_DASHBOARD_SCREENSHOT")
    if screenshot:
        page.screenshot(path=screenshot)


def _series_sums(page: Page, chart: str) -> dict[str, int]:
    """Per series of a chart, the sum of its bars' values."""
    sums: dict[str, int] = page.evaluate(
        """(chart) => Object.fromEntries([...document.querySelectorAll(
              `svg[data-chart=${chart}] g[data-series]`)]
            .map((g) => [g.dataset.series, [...g.querySelectorAll('rect')]
                .reduce((sum, rect) => sum + Number(rect.dataset.value), 0)])
            .filter(([, sum]) => sum > 0))""",
        chart,
    )
    return sums


def test_the_charts_follow_the_chosen_dimension(tab: Tab, traffic: Traffic) -> None:
    page, ledger = tab.page, Ledger(traffic.ledger)
    sign_in(page, TOKEN)
    for dimension, column in (("model", "model"), ("product", "product_id")):
        page.select_option("#dimension", dimension)
        page.wait_for_selector(f"#cost-by:text('(by {dimension})')")
        page.wait_for_selector("body[data-state=ready]")
        used = {key: n for key, n in ledger.by(column).items() if n}
        assert series(page, "tokens") == len(used)
        assert _series_sums(page, "tokens") == used
    assert {MODEL, EURO_MODEL, UNPRICED_MODEL} <= set(ledger.by("model"))


@pytest.mark.usefixtures("traffic")
def test_the_token_survives_a_reload_and_an_empty_period_says_so(tab: Tab) -> None:
    page = tab.page
    sign_in(page, TOKEN)
    page.reload()
    page.wait_for_selector("body[data-state=ready]")  # no prompt: the tab kept the token
    page.fill("#from", "2001-01-01")
    page.fill("#to", "2001-01-07")
    page.click("#refresh")
    page.wait_for_selector("body[data-state=empty]")
    assert page.is_visible("[data-testid=empty]") and page.is_hidden("#data")
    assert "No usage in this period" in page.inner_text("[data-testid=empty]")
    called = httpx.URL(tab.report_calls[-1])
    assert called.params["from"] == "2001-01-01T00:00:00Z"
    assert called.params["to"] == "2001-01-08T00:00:00Z"  # the end day is included
    assert TOKEN not in str(called)
    # Forgetting the token returns to the prompt.
    page.click("#forget")
    page.wait_for_selector("body[data-state=login]")
    assert page.evaluate("sessionStorage.length") == 0


@pytest.mark.usefixtures("traffic")  # data to show once the error is gone
def test_an_api_error_shows_its_message_and_keeps_the_token(tab: Tab) -> None:
    page = tab.page
    # As the admin API answers when the ledger database is down.
    body = '{"statusCode": 503, "message": "usage ledger unavailable; try again later"}'
    page.route(
        "**/usage/report?*",
        lambda route: route.fulfill(status=503, content_type="application/json", body=body),
    )
    sign_in(page, TOKEN, state="error")
    assert page.inner_text("#error") == "503: usage ledger unavailable; try again later"
    assert page.is_hidden("#report") and page.is_hidden("#login")
    assert page.evaluate("sessionStorage.length") == 1  # only a 401 forgets the token
    page.unroute("**/usage/report?*")
    page.click("#refresh")
    page.wait_for_selector("body[data-state=ready]")
    assert page.is_hidden("#error")
