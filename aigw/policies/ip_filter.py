"""`ip-filter`: allow only, or forbid, callers from listed addresses, networks and ranges.

Everything is parsed when the config is built into sorted, merged integer ranges per address
family, so a check is a parse of the caller address and one binary search. Unlike APIM,
addresses are literals, not expressions, which is what makes that precomputation possible.
"""

from __future__ import annotations

import ipaddress
from bisect import bisect_right
from dataclasses import dataclass
from typing import TYPE_CHECKING, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from aigw.context import RequestContext, Response
from aigw.errors import GatewayError
from aigw.policies.base import Policy, PolicyConfig
from aigw.policies.registry import register

if TYPE_CHECKING:
    from aigw.policies.build import BuildContext

Address = ipaddress.IPv4Address | ipaddress.IPv6Address


class AddressRange(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)

    from_: str = Field(alias="from")
    to: str


class IpFilterConfig(PolicyConfig):
    action: Literal["allow", "forbid"]
    address: list[str] = []
    address_range: list[AddressRange] = []

    @model_validator(mode="after")
    def _something_to_filter(self) -> IpFilterConfig:
        if not self.address and not self.address_range:
            raise ValueError("at least one 'address' or 'address-range' is required")
        return self


def parse_address(text: str) -> Address:
    address = ipaddress.ip_address(text.strip())
    # An IPv4 client seen through a dual-stack socket must match IPv4 rules.
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        return address.ipv4_mapped
    return address


@dataclass(frozen=True, slots=True)
class RangeSet:
    """Disjoint, sorted inclusive ranges of one address family."""

    starts: tuple[int, ...]
    ends: tuple[int, ...]

    @classmethod
    def merge(cls, ranges: list[tuple[int, int]]) -> RangeSet:
        merged: list[list[int]] = []
        for start, end in sorted(ranges):
            if merged and start <= merged[-1][1] + 1:
                merged[-1][1] = max(merged[-1][1], end)
            else:
                merged.append([start, end])
        return cls(tuple(r[0] for r in merged), tuple(r[1] for r in merged))

    def __contains__(self, value: int) -> bool:
        index = bisect_right(self.starts, value) - 1
        return index >= 0 and value <= self.ends[index]


def _address_ranges(
    config: IpFilterConfig, build: BuildContext
) -> dict[int, list[tuple[int, int]]]:
    ranges: dict[int, list[tuple[int, int]]] = {4: [], 6: []}
    for index, text in enumerate(config.address):
        try:
            if "/" in text:
                network = _unmapped(ipaddress.ip_network(text.strip()))
                first, last = network.network_address, network.broadcast_address
            else:
                first = last = parse_address(text)
        except ValueError as exc:
            build.error(str(exc), f".address[{index}]")
            continue
        ranges[first.version].append((int(first), int(last)))
    for index, item in enumerate(config.address_range):
        path = f".address-range[{index}]"
        try:
            low, high = parse_address(item.from_), parse_address(item.to)
        except ValueError as exc:
            build.error(str(exc), path)
            continue
        if low.version != high.version:
            build.error("'from' and 'to' must be of the same address family", path)
        elif int(low) > int(high):
            build.error("'from' must not be greater than 'to'", path)
        else:
            ranges[low.version].append((int(low), int(high)))
    return ranges


@register("ip-filter")
class IpFilter(Policy):
    config_model = IpFilterConfig
    enforcing = True
    sections = frozenset({"inbound"})

    def __init__(self, config: object, build: BuildContext) -> None:
        assert isinstance(config, IpFilterConfig)
        super().__init__(config, build)
        self.allow = config.action == "allow"
        ranges = _address_ranges(config, build)
        self.ranges = {version: RangeSet.merge(items) for version, items in ranges.items()}
        self.count = len(config.address) + len(config.address_range)

    async def apply(self, ctx: RequestContext) -> Response | None:
        try:
            address = parse_address(ctx.request.client_ip)
        except ValueError:
            raise self._reject("FailedToParseCallerIP") from None
        listed = int(address) in self.ranges[address.version]
        if self.allow and not listed:
            raise self._reject("CallerIpNotAllowed")
        if not self.allow and listed:
            raise self._reject("CallerIpBlocked")
        return None

    @staticmethod
    def _reject(reason: str) -> GatewayError:
        return GatewayError("Forbidden", status_code=403, reason=reason, source="ip-filter")

    def describe(self) -> str:
        action = "allow" if self.allow else "forbid"
        return f"{super().describe()} {action} {self.count} addresses/ranges"


def _unmapped(
    network: ipaddress.IPv4Network | ipaddress.IPv6Network,
) -> ipaddress.IPv4Network | ipaddress.IPv6Network:
    """An IPv4-mapped IPv6 network (`::ffff:203.0.113.0/120`) as the IPv4 network it is:
    callers' mapped addresses are compared as IPv4, so it would otherwise match nobody."""
    if isinstance(network, ipaddress.IPv6Network) and network.prefixlen >= 96:
        mapped = network.network_address.ipv4_mapped
        if mapped is not None:
            return ipaddress.IPv4Network((mapped, network.prefixlen - 96))
    return network
