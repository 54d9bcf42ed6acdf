"""The SSRF guard: address classification, --allow-host parsing, and the connect-time check."""

from __future__ import annotations

import asyncio
import ipaddress
import ssl
from collections.abc import Iterable, Sequence
from typing import Any

import httpcore
import pytest

from datasetagent.errors import UsageError
from datasetagent.web.guard import (
    AddressPolicy,
    BlockedAddress,
    GuardedBackend,
    parse_allow_host,
    refusal,
)

PUBLIC = [
    "8.8.8.8",
    "93.184.216.34",
    "1.1.1.1",
    "2606:4700::1111",
    "2a00:1450:4001:800::200e",
    "::ffff:8.8.8.8",  # IPv4-mapped public
    "64:ff9b::808:808",  # NAT64 of 8.8.8.8
    "2002:808:808::1",  # 6to4 of 8.8.8.8
]

NOT_PUBLIC = [
    ("127.0.0.1", "loopback"),
    ("127.255.0.9", "loopback"),
    ("10.1.2.3", "private"),
    ("172.16.0.1", "private"),
    ("192.168.1.1", "private"),
    ("169.254.169.254", "link-local"),  # cloud metadata
    ("0.0.0.0", "unspecified"),
    ("0.1.2.3", "this-network"),
    ("100.64.0.1", "shared (CGNAT)"),
    ("100.127.255.254", "shared (CGNAT)"),
    ("192.0.0.9", "IETF protocol assignments"),
    ("192.0.2.1", "documentation"),
    ("198.51.100.7", "documentation"),
    ("203.0.113.200", "documentation"),
    ("198.18.0.1", "benchmarking"),
    ("198.19.255.1", "benchmarking"),
    ("224.0.0.1", "multicast"),
    ("239.255.255.250", "multicast"),
    ("240.0.0.1", "reserved"),
    ("255.255.255.255", "broadcast"),
    ("::", "unspecified"),
    ("::1", "loopback"),
    ("fe80::1", "link-local"),
    ("fec0::1", "site-local"),
    ("fc00::1", "unique-local"),
    ("fd12:3456::1", "unique-local"),
    ("ff02::1", "multicast"),
    ("2001:db8::1", "documentation"),
    ("3fff::1", "documentation"),
    ("2001:2::1", "benchmarking"),
    ("64:ff9b:1::a00:1", "local-use NAT64"),
    ("100::1", "discard-only"),
    # IPv4 inside IPv6: judged by the IPv4 address
    ("::ffff:127.0.0.1", "loopback: IPv4-mapped form of 127.0.0.1"),
    ("::ffff:10.0.0.1", "private: IPv4-mapped form of 10.0.0.1"),
    ("::ffff:169.254.169.254", "link-local: IPv4-mapped form of 169.254.169.254"),
    ("::127.0.0.1", "loopback: IPv4-compatible form of 127.0.0.1"),
    ("::8.8.8.8", "IPv4-compatible tunnel address"),  # deprecated form: never
    ("64:ff9b::7f00:1", "loopback: NAT64 form of 127.0.0.1"),
    ("64:ff9b::a00:1", "private: NAT64 form of 10.0.0.1"),
    ("2002:7f00:1::1", "loopback: 6to4 form of 127.0.0.1"),
    ("2002:c0a8:101::1", "private: 6to4 form of 192.168.1.1"),
    # Teredo: server 65.54.227.120, client 192.168.1.1 (stored inverted: 3f57:fefe)
    ("2001:0:4136:e378:8000:63bf:3f57:fefe", "private: Teredo form of 192.168.1.1"),
    ("2001:0:4136:e378:8000:63bf:f7f7:f7f7", "Teredo tunnel address"),  # client 8.8.8.8
]


@pytest.mark.parametrize("address", PUBLIC)
def test_public_addresses_pass(address: str) -> None:
    assert refusal(ipaddress.ip_address(address)) is None


@pytest.mark.parametrize(("address", "reason"), NOT_PUBLIC)
def test_non_public_addresses_are_named(address: str, reason: str) -> None:
    assert refusal(ipaddress.ip_address(address)) == reason


@pytest.mark.parametrize(
    ("text", "pairs"),
    [
        ("127.0.0.1:8080", {("127.0.0.1", 8080)}),
        ("[::1]:8080", {("::1", 8080)}),
        ("[0:0::1]:8080", {("::1", 8080)}),
        ("LocalHost:9000", {("localhost", 9000)}),
        ("images.example", {("images.example", 80), ("images.example", 443)}),
        ("Bücher.Example:443", {("xn--bcher-kva.example", 443)}),
        ("[::1]", {("::1", 80), ("::1", 443)}),
        (" 10.0.0.5:1 ", {("10.0.0.5", 1)}),
    ],
)
def test_parse_allow_host(text: str, pairs: set[tuple[str, int]]) -> None:
    assert set(parse_allow_host(text)) == pairs


@pytest.mark.parametrize(
    ("text", "why"),
    [
        ("::1", "brackets"),
        ("::1:8080", "brackets"),
        ("[::1", "unclosed"),
        ("[::1]8080", "unexpected"),
        ("host:", "empty port"),
        ("host:http", "port must be a number"),
        ("host:0", "port must be a number"),
        ("host:70000", "port must be a number"),
        ("", "not a host name"),
        ("a/b:80", "not a host name"),
        ("user@host:80", "not a host name"),
        ("[nothex]:80", "not a host name"),
    ],
)
def test_parse_allow_host_rejects_bad_text(text: str, why: str) -> None:
    with pytest.raises(UsageError) as raised:
        parse_allow_host(text)
    message = str(raised.value)
    assert why in message
    assert "\n" not in message
    assert "HOST[:PORT]" in message  # says how to write it


def ips(*texts: str) -> list[ipaddress.IPv4Address | ipaddress.IPv6Address]:
    return [ipaddress.ip_address(t) for t in texts]


def test_policy_refuses_names_resolving_to_private_addresses_and_says_how_to_allow() -> None:
    policy = AddressPolicy()
    why = policy.check("intranet.example", 443, ips("10.0.0.7"))
    assert why is not None
    assert "10.0.0.7" in why
    assert "private" in why
    assert "--allow-host intranet.example:443" in why
    assert policy.check("images.example", 443, ips("93.184.216.34")) is None


def test_one_private_address_among_public_ones_refuses_the_name() -> None:
    why = AddressPolicy().check("mixed.example", 80, ips("93.184.216.34", "127.0.0.1"))
    assert why is not None
    assert "127.0.0.1" in why
    assert "loopback" in why


def test_a_name_resolving_to_nothing_is_refused() -> None:
    assert AddressPolicy().check("empty.example", 80, []) is not None


def test_allowed_host_port_passes_and_the_same_host_on_another_port_does_not() -> None:
    policy = AddressPolicy.from_allow_hosts(["127.0.0.1:8080"])
    loop = ips("127.0.0.1")
    assert policy.check("127.0.0.1", 8080, loop) is None
    why = policy.check("127.0.0.1", 8081, loop)
    assert why is not None
    assert "--allow-host 127.0.0.1:8081" in why
    # names are matched as written, not through their addresses
    assert policy.check("localhost", 8080, loop) is not None


def test_allowed_ipv6_and_idna_hosts_match_their_wire_form() -> None:
    policy = AddressPolicy.from_allow_hosts(["[::1]:9000", "bücher.example"])
    assert policy.check("::1", 9000, ips("::1")) is None
    assert policy.check("0:0:0:0:0:0:0:1", 9000, ips("::1")) is None
    assert policy.check("xn--bcher-kva.example", 443, ips("10.0.0.1")) is None
    why = AddressPolicy().check("::1", 9000, ips("::1"))
    assert why is not None
    assert "--allow-host [::1]:9000" in why


def test_an_ip_literal_host_is_checked_like_a_resolved_name() -> None:
    why = AddressPolicy().check("169.254.169.254", 80, ips("169.254.169.254"))
    assert why is not None
    assert "link-local" in why


# -- the connect-time check ----------------------------------------------------------------


class Stop(Exception):
    """Ends a connection attempt in a test once the interesting part happened."""


class RecordingStream(httpcore.AsyncNetworkStream):
    def __init__(self, log: list[tuple[str, Any]]) -> None:
        self.log = log

    async def read(self, max_bytes: int, timeout: float | None = None) -> bytes:
        raise Stop("read")

    async def write(self, buffer: bytes, timeout: float | None = None) -> None:
        raise Stop("write")

    async def aclose(self) -> None:
        pass

    async def start_tls(
        self,
        ssl_context: ssl.SSLContext,
        server_hostname: str | None = None,
        timeout: float | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.log.append(("start_tls", server_hostname))
        raise Stop("tls")


class RecordingBackend(httpcore.AsyncNetworkBackend):
    def __init__(self) -> None:
        self.log: list[tuple[str, Any]] = []

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        self.log.append(("connect", (host, port)))
        return RecordingStream(self.log)


class FlippingResolver:
    """Answers a public address first, then a private one (a DNS rebinding attack)."""

    def __init__(self, *answers: Sequence[str]) -> None:
        self.answers = list(answers)
        self.asked: list[tuple[str, int]] = []

    async def __call__(self, host: str, port: int) -> Sequence[str]:
        self.asked.append((host, port))
        return self.answers.pop(0)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def test_backend_connects_to_the_address_it_checked_and_tls_keeps_the_host_name() -> None:
    inner = RecordingBackend()
    resolver = FlippingResolver(["93.184.216.34"], ["127.0.0.1"])
    backend = GuardedBackend(AddressPolicy(), resolver=resolver, inner=inner)

    async def go() -> None:
        async with httpcore.AsyncConnectionPool(network_backend=backend) as pool:
            with pytest.raises(Stop):
                await pool.request("GET", "https://images.example/cat.jpg")

    run(go())
    assert resolver.asked == [("images.example", 443)]  # resolved once, by the guard
    assert inner.log == [
        ("connect", ("93.184.216.34", 443)),  # the checked address, never the name
        ("start_tls", "images.example"),  # certificate checked against the name
    ]


def test_backend_refuses_before_connecting_when_the_name_resolves_privately() -> None:
    inner = RecordingBackend()
    backend = GuardedBackend(
        AddressPolicy(), resolver=FlippingResolver(["10.0.0.5", "93.184.216.34"]), inner=inner
    )

    async def go() -> None:
        async with httpcore.AsyncConnectionPool(network_backend=backend) as pool:
            await pool.request("GET", "http://rebind.example/")

    with pytest.raises(BlockedAddress, match=r"10\.0\.0\.5 \(rebind\.example\).*private"):
        run(go())
    assert inner.log == []


def test_backend_lets_an_allowed_host_port_through_to_its_address() -> None:
    inner = RecordingBackend()
    policy = AddressPolicy.from_allow_hosts(["lan.example:8080"])
    resolver = FlippingResolver(["192.168.1.20"], ["192.168.1.20"])
    backend = GuardedBackend(policy, resolver=resolver, inner=inner)

    async def go(url: str) -> None:
        async with httpcore.AsyncConnectionPool(network_backend=backend) as pool:
            await pool.request("GET", url)

    with pytest.raises(Stop):
        run(go("http://lan.example:8080/a.png"))
    assert inner.log == [("connect", ("192.168.1.20", 8080))]
    with pytest.raises(BlockedAddress, match=r"--allow-host lan\.example:8081"):
        run(go("http://lan.example:8081/a.png"))


def test_backend_turns_lookup_failures_into_connect_errors() -> None:
    async def broken(host: str, port: int) -> Sequence[str]:
        raise OSError("Name or service not known")

    backend = GuardedBackend(AddressPolicy(), resolver=broken, inner=RecordingBackend())
    with pytest.raises(httpcore.ConnectError, match=r"cannot look up nowhere\.example"):
        run(backend.connect_tcp("nowhere.example", 80))
