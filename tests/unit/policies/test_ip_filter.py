from __future__ import annotations

from typing import Any

import pytest

from aigw.errors import GatewayError
from tests.unit.policies.conftest import build, build_one, issues_of, make_ctx, run

P = "policies.inbound[0].ip-filter"
LISTS: dict[str, Any] = {
    "address": ["13.66.201.169", "10.0.0.0/8", "2001:db8::/32", "::1"],
    "address-range": [
        {"from": "13.66.140.128", "to": "13.66.140.143"},
        {"from": "2001:db9::10", "to": "2001:db9::20"},
    ],
}
LISTED = [
    "13.66.201.169",
    "10.1.2.3",
    "10.255.255.255",
    "13.66.140.128",
    "13.66.140.143",
    "2001:db8:1::5",
    "::1",
    "2001:db9::15",
    "::ffff:10.0.0.1",  # IPv4-mapped: matches IPv4 rules
]
NOT_LISTED = ["13.66.201.170", "11.0.0.0", "13.66.140.127", "13.66.140.144", "2001:db9::21", "::2"]


def verdict(action: str, client_ip: str) -> str | None:
    policy = build_one("ip-filter", {"action": action, **LISTS})
    try:
        run(policy, make_ctx(client_ip=client_ip))
    except GatewayError as error:
        assert (error.status_code, error.message, error.source) == (403, "Forbidden", "ip-filter")
        return error.reason
    return None


@pytest.mark.parametrize("ip", LISTED)
def test_listed_addresses(ip: str) -> None:
    assert verdict("allow", ip) is None
    assert verdict("forbid", ip) == "CallerIpBlocked"


@pytest.mark.parametrize("ip", NOT_LISTED)
def test_unlisted_addresses(ip: str) -> None:
    assert verdict("allow", ip) == "CallerIpNotAllowed"
    assert verdict("forbid", ip) is None


@pytest.mark.parametrize("ip", ["", "unknown", "10.0.0.256", "1.2.3.4:80"])
@pytest.mark.parametrize("action", ["allow", "forbid"])
def test_unparseable_caller_is_forbidden(ip: str, action: str) -> None:
    assert verdict(action, ip) == "FailedToParseCallerIP"


@pytest.mark.parametrize("caller", ["203.0.113.7", "::ffff:203.0.113.7"])
def test_an_ipv4_mapped_network_matches_the_ipv4_addresses_it_maps(caller: str) -> None:
    policy = build_one("ip-filter", {"action": "forbid", "address": ["::ffff:203.0.113.0/120"]})
    with pytest.raises(GatewayError) as blocked:
        run(policy, make_ctx(client_ip=caller))
    assert blocked.value.reason == "CallerIpBlocked"
    run(policy, make_ctx(client_ip="203.0.114.7"))  # outside the mapped /24: passes


def test_overlapping_ranges_are_merged() -> None:
    policy = build_one(
        "ip-filter",
        {
            "action": "allow",
            "address-range": [
                {"from": "10.0.0.10", "to": "10.0.0.20"},
                {"from": "10.0.0.15", "to": "10.0.0.30"},
                {"from": "10.0.0.31", "to": "10.0.0.31"},
            ],
        },
    )
    for ip, allowed in [
        ("10.0.0.9", False),
        ("10.0.0.25", True),
        ("10.0.0.31", True),
        ("10.0.0.32", False),
    ]:
        ctx = make_ctx(client_ip=ip)
        if allowed:
            assert run(policy, ctx) is None
        else:
            with pytest.raises(GatewayError):
                run(policy, ctx)


def test_bad_addresses_are_config_errors_with_paths() -> None:
    issues = issues_of(
        "ip-filter",
        {
            "action": "allow",
            "address": ["1.2.3.4", "1.2.3", "10.0.0.1/8", "::1/129"],
            "address-range": [
                {"from": "10.0.0.9", "to": "10.0.0.1"},
                {"from": "10.0.0.1", "to": "::1"},
                {"from": "nope", "to": "10.0.0.1"},
            ],
        },
    )
    assert set(issues) == {
        f"{P}.address[1]",
        f"{P}.address[2]",
        f"{P}.address[3]",
        f"{P}.address-range[0]",
        f"{P}.address-range[1]",
        f"{P}.address-range[2]",
    }


def test_other_config_errors() -> None:
    assert list(issues_of("ip-filter", {"action": "deny", "address": ["::1"]})) == [f"{P}.action"]
    assert list(issues_of("ip-filter", {"action": "allow"})) == [P]
    assert list(
        issues_of("ip-filter", {"action": "allow", "address-range": [{"from": "::1"}]})
    ) == [f"{P}.address-range[0].to"]
    assert list(build([{"ip-filter": {"action": "allow", "address": ["::1"]}}], "outbound")[1]) == [
        "policies.outbound[0]"
    ]


def test_describe() -> None:
    assert (
        build_one("ip-filter", {"action": "forbid", **LISTS}).describe()
        == "ip-filter forbid 6 addresses/ranges"
    )
