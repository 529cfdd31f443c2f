"""The webhook guard on IPv6 forms that carry an IPv4 address (NAT64, 6to4, Teredo,
IPv4-compatible, -mapped, -translated): each is decided like the IPv4 address it carries, so no
form reaches loopback, private, link-local, shared or metadata addresses on a network that
translates it. Forms are generated from arbitrary IPv4 addresses in each range."""

from __future__ import annotations

import ipaddress
from collections.abc import Callable

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from shared.webhooks.delivery import UnsafeTarget, address_refusal, check_address, check_url

V4 = ipaddress.IPv4Address


def v4_in(network: str) -> st.SearchStrategy[V4]:
    net = ipaddress.IPv4Network(network)
    return st.integers(int(net.network_address), int(net.broadcast_address)).map(V4)


NON_PUBLIC = st.one_of(
    v4_in("127.0.0.0/8"),  # loopback
    v4_in("10.0.0.0/8"),  # private
    v4_in("172.16.0.0/12"),
    v4_in("192.168.0.0/16"),
    v4_in("169.254.0.0/16"),  # link-local
    st.just(V4("169.254.169.254")),  # cloud metadata
    v4_in("100.64.0.0/10"),  # shared (carrier-grade NAT)
    v4_in("0.0.0.0/8"),
    v4_in("240.0.0.0/4"),  # reserved
    v4_in("224.0.0.0/4"),  # multicast
)
ANY_V4 = st.integers(0, 2**32 - 1).map(V4)
PUBLIC_V4 = ANY_V4.filter(lambda a: address_refusal(str(a), allow_loopback=False) is None)
BITS = st.integers(0, 2**80 - 1)


def nat64(a: V4, _: int) -> str:
    return str(ipaddress.IPv6Address((0x64FF9B << 96) | int(a)))


def sixtofour(a: V4, rest: int) -> str:  # 2002:V4::/48, any subnet and interface bits
    return str(ipaddress.IPv6Address((0x2002 << 112) | (int(a) << 80) | rest))


def compatible(a: V4, _: int) -> str:  # ::a.b.c.d
    return str(ipaddress.IPv6Address(int(a)))


def mapped(a: V4, _: int) -> str:  # ::ffff:a.b.c.d
    return str(ipaddress.IPv6Address((0xFFFF << 32) | int(a)))


def translated(a: V4, _: int) -> str:  # ::ffff:0:a.b.c.d
    return str(ipaddress.IPv6Address((0xFFFF << 48) | int(a)))


def teredo(a: V4, rest: int) -> str:  # 2001:0:SERVER:FLAGS:PORT:~CLIENT, a public server
    server = int(V4("192.0.32.10")) if rest % 2 else int(V4("65.54.227.120"))
    flags_port = (rest >> 1) & 0xFFFFFFFF
    client = ~int(a) & 0xFFFFFFFF
    return str(ipaddress.IPv6Address((0x20010000 << 96) | (server << 64) | (flags_port << 32) | client))


FORMS: dict[str, Callable[[V4, int], str]] = {
    "nat64": nat64,
    "6to4": sixtofour,
    "ipv4-compatible": compatible,
    "ipv4-mapped": mapped,
    "ipv4-translated": translated,
    "teredo": teredo,
}


def refused(address: str, allow_loopback: bool = False) -> bool:
    return address_refusal(address, allow_loopback) is not None


@pytest.mark.parametrize("form", FORMS)
@given(inner=NON_PUBLIC, rest=BITS)
def test_every_form_of_a_non_public_ipv4_address_is_refused(form: str, inner: V4, rest: int) -> None:
    address = FORMS[form](inner, rest)
    if form == "ipv4-compatible" and int(inner) <= 1:
        return  # `::` and `::1` are IPv6's own unspecified and loopback addresses (refused below)
    assert refused(address), address
    with pytest.raises(UnsafeTarget):
        check_address(address, allow_loopback=False)


@pytest.mark.parametrize("form", FORMS)
@given(inner=ANY_V4, rest=BITS)
def test_a_form_is_decided_like_the_ipv4_address_it_carries(form: str, inner: V4, rest: int) -> None:
    if form == "ipv4-compatible" and int(inner) <= 1:
        return
    for dev in (False, True):
        assert refused(FORMS[form](inner, rest), dev) == refused(str(inner), dev)


@pytest.mark.parametrize("form", FORMS)
@given(inner=PUBLIC_V4, rest=BITS)
def test_public_ipv4_addresses_in_any_form_may_be_called(form: str, inner: V4, rest: int) -> None:
    assert not refused(FORMS[form](inner, rest))


@pytest.mark.parametrize(
    "address",
    [
        # The issue's reproductions: each got 202, and delivery was attempted.
        *("64:ff9b::7f00:1", "::7f00:1", "2002:7f00:1::", "64:ff9b::a9fe:a9fe", "::ffff:0:7f00:1", "fec0::1"),
        # and their neighbours: local-use NAT64, unique local, link-local, documentation, ...
        *("64:ff9b:1::a00:1", "64:ff9b:1::808:808", "fd00::1", "fe80::1", "2001:db8::1", "ff02::1", "::"),
        "::1",
    ],
)
def test_the_issues_ipv6_forms_are_refused_outside_development(address: str) -> None:
    assert refused(address)
    with pytest.raises(UnsafeTarget):
        check_url(f"https://[{address}]/hook", dev=False)


@given(ip=st.integers(0, 2**128 - 1).map(ipaddress.IPv6Address))
@example(ip=ipaddress.IPv6Address("fec0::1"))
@example(ip=ipaddress.IPv6Address("fc00::1"))
def test_ipv6_outside_global_unicast_is_refused_unless_it_carries_a_public_ipv4(
    ip: ipaddress.IPv6Address,
) -> None:
    carries_v4 = (
        ip.ipv4_mapped is not None
        or ip in ipaddress.IPv6Network("64:ff9b::/96")
        or ip in ipaddress.IPv6Network("::ffff:0:0:0/96")
        or (ip in ipaddress.IPv6Network("::/96") and int(ip) > 1)
    )
    if ip not in ipaddress.IPv6Network("2000::/3") and not carries_v4:
        assert refused(str(ip))


@pytest.mark.parametrize(
    "address", ["2606:4700::1111", "2a00:1450:4001::200e", "64:ff9b::808:808", "2002:808:808::1"]
)
def test_public_ipv6_addresses_may_be_called(address: str) -> None:
    assert not refused(address)


def test_a_refused_host_name_is_not_answered_with_its_address() -> None:
    """The address a name resolves to is an oracle for internal DNS: the refusal says the host
    resolves to a non-public address, never which."""

    def internal(host: str, port: int) -> list[str]:
        return ["10.20.30.40"]

    with pytest.raises(UnsafeTarget) as refusal:
        check_url("https://build.internal.example/hook", dev=False, resolver=internal)
    message = str(refusal.value)
    assert "10.20.30.40" not in message
    assert message.startswith("build.internal.example resolves to an address that is not public")
