"""`aigw subscriptions` against the SQLite store a running gateway uses: the CLI and the admin
API see each other's changes at once."""

from __future__ import annotations

import getpass
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.e2e.admin_helpers import TOKEN_ENV, admin_client, admin_config, cli, cli_json
from tests.support import DemoBackend, Gateway

KEY_LINE = re.compile(r"^(Primary|Secondary) key: +([0-9a-f]{64})$", re.MULTILINE)


@pytest.fixture(scope="module")
def gateway_config(demo_backend: DemoBackend) -> dict[str, Any]:
    return admin_config(demo_backend.url)


@pytest.fixture(scope="module")
def gateway(
    tmp_path_factory: pytest.TempPathFactory, gateway_config: dict[str, Any]
) -> Iterator[Gateway]:
    gw = Gateway(Path(tmp_path_factory.mktemp("cli")), gateway_config, env=TOKEN_ENV)
    yield gw
    gw.stop()


@pytest.fixture(scope="module")
def config(gateway: Gateway) -> Path:
    return gateway.config_path


@pytest.fixture(scope="module")
def admin(gateway: Gateway, gateway_config: dict[str, Any]) -> Iterator[httpx.Client]:
    with admin_client(gateway_config) as client:
        yield client


def test_create_prints_both_keys_once(config: Path, admin: httpx.Client) -> None:
    result = cli(
        config, "create", "--product", "starter", "--name", "CLI Team", "--id", "cli-team",
        "--owner", "carol", "--expires", "2099-06-30T12:00:00Z",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    keys = dict(KEY_LINE.findall(result.stdout))
    assert set(keys) == {"Primary", "Secondary"} and keys["Primary"] != keys["Secondary"]
    assert "not shown again" in result.stdout
    assert re.search(r"^Scope: +/products/starter$", result.stdout, re.MULTILINE)
    # The gateway's admin API sees it at once, without keys.
    shown = admin.get("/subscriptions/cli-team").json()
    assert shown["displayName"] == "CLI Team" and shown["ownerId"] == "carol"
    assert shown["expirationDate"] == "2099-06-30T12:00:00Z"
    assert keys["Primary"] not in cli(config, "show", "cli-team").stdout


def test_create_json_has_the_admin_api_fields_and_keys(config: Path) -> None:
    created = cli_json(config, "create", "--scope", "/apis/azure", "--name", "Scripted")
    assert created["scope"] == "/apis/azure" and created["state"] == "active"
    assert re.fullmatch(r"[0-9a-f]{64}", created["primaryKey"])
    assert re.fullmatch(r"[0-9a-f]{64}", created["secondaryKey"])
    assert created["id"].startswith("sub-")


def test_list_as_a_table_and_as_json(config: Path, admin: httpx.Client) -> None:
    admin.post(
        "/subscriptions", json={"displayName": "From API", "product": "premium", "id": "api-made"}
    )
    table = cli(config, "list")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == ["ID", "NAME", "SCOPE", "STATE", "OWNER", "EXPIRES"]
    row = next(line for line in lines if line.startswith("api-made "))
    assert row.split()[-4:] == ["/products/premium", "active", "-", "-"]
    # Columns line up: each header starts where its values start.
    assert lines[0].index("SCOPE") == row.index("/products/premium")
    listing = cli_json(config, "list", "--product", "premium")
    assert [sub["id"] for sub in listing["value"]] == ["api-made"]
    assert listing["count"] == 1
    assert "primaryKey" not in listing["value"][0]
    before = cli(config, "--json", "list", "--product", "premium")  # --json before the command
    assert json.loads(before.stdout) == listing
    empty = cli(config, "list", "--state", "rejected")
    assert empty.returncode == 0 and empty.stdout.strip() == "(none)"


def test_show_prints_details_and_recent_changes(config: Path, admin: httpx.Client) -> None:
    cli(config, "create", "--product", "starter", "--name", "Shown", "--id", "shown")
    admin.post(
        "/subscriptions/shown/suspend", json={"comment": "paused"}, headers={"X-Aigw-Actor": "ops"}
    )
    result = cli(config, "show", "shown")
    assert result.returncode == 0, result.stderr
    assert re.search(r"^State: +suspended$", result.stdout, re.MULTILINE)
    assert re.search(r"^Comment: +paused$", result.stdout, re.MULTILINE)
    assert "Recent changes" in result.stdout
    assert "admin-api@127.0.0.1 (ops)" in result.stdout
    assert f"cli:{getpass.getuser()}" in result.stdout
    document = cli_json(config, "show", "shown")
    assert document["state"] == "suspended"
    assert [entry["action"] for entry in document["audit"]] == ["suspend", "create"]


def test_suspend_activate_cancel(config: Path, admin: httpx.Client) -> None:
    cli(config, "create", "--product", "starter", "--name", "States", "--id", "states")
    suspended = cli(config, "suspend", "states", "--comment", "unpaid")
    assert suspended.returncode == 0, suspended.stderr
    assert admin.get("/subscriptions/states").json()["stateComment"] == "unpaid"
    assert admin.get("/subscriptions/states").json()["state"] == "suspended"
    assert cli_json(config, "activate", "states")["state"] == "active"
    assert cli_json(config, "cancel", "states")["state"] == "cancelled"
    again = cli(config, "activate", "states")
    assert again.returncode == 1
    assert "cancelled subscription cannot be changed" in again.stderr
    assert "Traceback" not in again.stderr and again.stdout == ""
    entries = admin.get("/subscriptions/states/audit").json()["value"]
    assert [entry["action"] for entry in entries] == ["cancel", "activate", "suspend", "create"]
    assert entries[0]["actor"] == f"cli:{getpass.getuser()}"


def test_regenerate_key_prints_a_new_key(config: Path) -> None:
    created = cli_json(config, "create", "--product", "starter", "--name", "Keys", "--id", "keys")
    result = cli(config, "regenerate-key", "keys", "--which", "secondary")
    assert result.returncode == 0, result.stderr
    keys = dict(KEY_LINE.findall(result.stdout))
    assert list(keys) == ["Secondary"]
    assert keys["Secondary"] not in (created["primaryKey"], created["secondaryKey"])
    assert "not shown again" in result.stdout
    regenerated = cli_json(config, "regenerate-key", "keys", "--which", "primary")
    assert "secondaryKey" not in regenerated
    assert regenerated["primaryKey"] != created["primaryKey"]


def test_update_name_owner_and_expiry(config: Path, admin: httpx.Client) -> None:
    cli(config, "create", "--product", "starter", "--name", "Before", "--id", "upd")
    updated = cli_json(
        config, "update", "upd", "--name", "After", "--owner", "dave", "--expires", "2099-01-01"
    )
    assert (updated["displayName"], updated["ownerId"]) == ("After", "dave")
    assert updated["expirationDate"] == "2099-01-01T00:00:00Z"
    cleared = cli_json(config, "update", "upd", "--no-expiry", "--no-owner")
    assert cleared["expirationDate"] is None and cleared["ownerId"] is None
    assert admin.get("/subscriptions/upd").json()["displayName"] == "After"


def test_products(config: Path) -> None:
    table = cli(config, "products")
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split()[:3] == ["ID", "NAME", "STATE"]
    assert lines[2].split() == ["premium", "Premium", "published", "yes", "openai,", "azure"]
    products = cli_json(config, "products")
    assert [product["id"] for product in products["value"]] == ["starter", "premium"]


@pytest.mark.parametrize(
    ("args", "mention"),
    [
        (("create", "--product", "nope", "--name", "x"), "unknown product 'nope'"),
        (("create", "--product", "starter", "--name", "x", "--expires", "soon"), "date-time"),
        (("create", "--product", "starter", "--name", "x" * 201), "at most 200"),
        (("show", "nope"), "subscription 'nope' not found"),
        (("suspend", "nope"), "not found"),
        (("list", "--state", "sleepy"), "unknown state"),
        (("update", "shown"), "nothing to change"),
    ],
)
def test_errors_exit_1_with_a_message(config: Path, args: tuple[str, ...], mention: str) -> None:
    result = cli(config, *args)
    assert result.returncode == 1
    assert mention in result.stderr
    assert "Traceback" not in result.stderr and result.stdout == ""


def test_a_duplicate_id_is_refused(config: Path) -> None:
    cli(config, "create", "--product", "starter", "--name", "Once", "--id", "once")
    again = cli(config, "create", "--product", "starter", "--name", "Twice", "--id", "once")
    assert again.returncode == 1 and "already exists" in again.stderr


def test_config_and_usage_errors_exit_2(config: Path, tmp_path: Path) -> None:
    missing = cli(tmp_path / "missing.yaml", "list")
    assert missing.returncode == 2 and "cannot read config file" in missing.stderr
    no_secret = cli(config, "list", env={"AIGW_TEST_ADMIN_TOKEN": ""})
    assert no_secret.returncode == 2 and "admin" in no_secret.stderr
    both = cli(config, "create", "--product", "starter", "--scope", "/apis", "--name", "x")
    assert both.returncode == 2 and "not allowed with" in both.stderr
    for result in (missing, no_secret, both):
        assert "Traceback" not in result.stderr


def test_an_unusable_store_exits_1(tmp_path: Path, config: Path) -> None:
    broken = tmp_path / "broken.yaml"
    (tmp_path / "not-a-dir").write_text("a file where the store's folder should be")
    text = config.read_text().replace("sqlite:subscriptions.db", "sqlite:not-a-dir/x.db")
    broken.write_text(text)
    result = cli(broken, "list")
    assert result.returncode == 1
    assert "subscription store" in result.stderr and "Traceback" not in result.stderr
