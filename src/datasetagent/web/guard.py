"""The SSRF guard: which addresses a web fetch may connect to, checked at connect time.

A URL from the web (an API result, a URL list, a redirect) must not make us reach a machine
the user did not mean to expose: a loopback service, the local network, a cloud metadata
endpoint. Every connection goes through :class:`GuardedBackend`, which resolves the name
itself, refuses unless every resolved address is public (or the ``(host, port)`` pair was
allowed with ``--allow-host``), and then connects to the very address it checked, so a DNS
answer that changes between check and connect (DNS rebinding) cannot slip a private address
in. TLS still verifies the certificate against the original host name: httpcore starts TLS on
the returned stream with ``server_hostname`` taken from the request's origin, not from the
address we connected to.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
import typing
from collections.abc import Awaitable, Callable, Iterable, Sequence
from dataclasses import dataclass

import httpcore
import httpx

from datasetagent.errors import UsageError

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[Sequence[str]]]

ALLOW_HOST_HELP = (
    "HOST[:PORT] that web fetches may reach although it is not a public address (a loopback "
    "or LAN server); IPv6 in brackets ([::1]:8080). Without a port it allows ports 80 and 443. "
    "Repeatable."
)

_DEFAULT_PORTS = (80, 443)

# Special-purpose ranges Python's ipaddress flags do not name (or, in 3.11, count as global).
_NAMED: tuple[tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, str], ...] = tuple(
    (ipaddress.ip_network(net), name)
    for net, name in (
        ("0.0.0.0/8", "this-network"),
        ("100.64.0.0/10", "shared (CGNAT)"),
        ("192.0.0.0/24", "IETF protocol assignments"),
        ("192.0.2.0/24", "documentation"),
        ("198.51.100.0/24", "documentation"),
        ("203.0.113.0/24", "documentation"),
        ("198.18.0.0/15", "benchmarking"),
        ("192.88.99.0/24", "6to4 relay anycast"),
        ("255.255.255.255/32", "broadcast"),
        ("100::/64", "discard-only"),
        ("2001:db8::/32", "documentation"),
        ("3fff::/20", "documentation"),
        ("2001:2::/48", "benchmarking"),
        ("64:ff9b:1::/48", "local-use NAT64"),
        ("fc00::/7", "unique-local"),
        ("fec0::/10", "site-local"),
    )
)
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
_COMPAT = ipaddress.IPv6Network("::/96")


class BlockedAddress(Exception):
    """A connection was refused by the guard; the message says which address and why."""


def refusal(ip: IPAddress) -> str | None:
    """Why ``ip`` is not a public address ("loopback", "private", …), or None when it is.

    IPv6 addresses that carry an IPv4 address (IPv4-mapped, IPv4-compatible, NAT64 64:ff9b::/96,
    6to4 2002::/16, Teredo 2001::/32) are judged by the IPv4 address inside as well.
    """
    if isinstance(ip, ipaddress.IPv6Address):
        inner = _embedded(ip)
        if inner is not None:
            kind, v4, final = inner
            why = refusal(v4)
            if why is not None:
                return f"{why}: {kind} form of {v4}"
            if final:
                return None
            if kind in ("IPv4-compatible", "Teredo"):
                return f"{kind} tunnel address"
    if ip.is_unspecified:
        return "unspecified"
    if ip.is_loopback:
        return "loopback"
    if ip.is_link_local:
        return "link-local"
    if ip.is_multicast:
        return "multicast"
    for net, name in _NAMED:
        if ip.version == net.version and ip in net:
            return name
    if ip.is_reserved:
        return "reserved"
    if ip.is_private:
        return "private"
    if not ip.is_global:
        return "not globally routable"
    return None


def _embedded(ip: ipaddress.IPv6Address) -> tuple[str, ipaddress.IPv4Address, bool] | None:
    """(kind, the IPv4 address inside, whether that address alone decides) or None."""
    if ip.ipv4_mapped is not None:
        return "IPv4-mapped", ip.ipv4_mapped, True
    if ip in _NAT64:
        return "NAT64", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), True
    if ip in _COMPAT and int(ip) > 1:
        return "IPv4-compatible", ipaddress.IPv4Address(int(ip) & 0xFFFFFFFF), False
    if ip.sixtofour is not None:
        return "6to4", ip.sixtofour, False
    if ip.teredo is not None:
        server, client = ip.teredo
        bad = client if refusal(client) is not None else server
        return "Teredo", bad, False
    return None


def normalise_host(host: str) -> str:
    """The form a host takes on the wire: lower case, IDNA (punycode), IP literals compressed.

    Raises ValueError when ``host`` is not a valid host name or address.
    """
    text = host.strip()
    if text.startswith("[") and text.endswith("]"):
        try:
            return str(ipaddress.IPv6Address(text[1:-1]))
        except ValueError:
            raise ValueError(f"{host!r} holds no IPv6 address in its brackets") from None
    try:
        return str(ipaddress.ip_address(text))
    except ValueError:
        pass
    if not text or any(c in text for c in "/?#@[]: \t"):
        raise ValueError(f"{host!r} is not a host name")
    try:
        raw = httpx.URL(scheme="http", host=text, path="/").raw_host
    except httpx.InvalidURL as exc:
        raise ValueError(f"{host!r} is not a host name: {exc}") from None
    return raw.decode("ascii").lower()


def _display(host: str, port: int) -> str:
    return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"


def parse_allow_host(text: str) -> tuple[tuple[str, int], ...]:
    """Parse one ``--allow-host`` value into the ``(host, port)`` pairs it allows.

    ``HOST:PORT`` allows exactly that pair; a bare ``HOST`` allows ports 80 and 443 (the ports
    an ``http``/``https`` URL without a port uses). IPv6 addresses go in brackets
    (``[::1]:8080``). Host names are matched as written (after IDNA and lower-casing), never by
    the addresses they resolve to: allowing ``localhost:8080`` does not allow ``127.0.0.1:8080``.
    """
    value = text.strip()
    fix = "write it as HOST[:PORT], e.g. 127.0.0.1:8080 or [::1]:8080"
    host, port_text = value, ""
    if value.startswith("["):
        end = value.find("]")
        if end < 0:
            raise UsageError(f"--allow-host {text!r}: unclosed '[' around an IPv6 address; {fix}")
        host, rest = value[: end + 1], value[end + 1 :]
        if rest and not rest.startswith(":"):
            raise UsageError(f"--allow-host {text!r}: unexpected {rest!r} after ']'; {fix}")
        port_text = rest[1:]
        if rest == ":":
            raise UsageError(f"--allow-host {text!r}: empty port; {fix}")
    elif value.count(":") > 1:
        raise UsageError(f"--allow-host {text!r}: put an IPv6 address in brackets; {fix}")
    elif ":" in value:
        host, port_text = value.split(":")
        if not port_text:
            raise UsageError(f"--allow-host {text!r}: empty port; {fix}")
    try:
        name = normalise_host(host)
    except ValueError:
        raise UsageError(f"--allow-host {text!r}: {host!r} is not a host name; {fix}") from None
    if not port_text:
        return tuple((name, p) for p in _DEFAULT_PORTS)
    if not port_text.isdigit() or not 1 <= int(port_text) <= 65535:
        raise UsageError(f"--allow-host {text!r}: port must be a number 1-65535; {fix}")
    return ((name, int(port_text)),)


@dataclass(frozen=True)
class AddressPolicy:
    """Which connections are allowed: public addresses always, others only if allowed here.

    ``allowed`` holds exact ``(host, port)`` pairs in :func:`normalise_host` form.
    """

    allowed: frozenset[tuple[str, int]] = frozenset()

    @classmethod
    def from_allow_hosts(cls, texts: Iterable[str]) -> AddressPolicy:
        """The policy for the given ``--allow-host`` values (see :func:`parse_allow_host`)."""
        return cls(frozenset(pair for text in texts for pair in parse_allow_host(text)))

    def check(self, host: str, port: int, ips: Iterable[IPAddress]) -> str | None:
        """Why connecting to ``host:port`` at ``ips`` is refused, or None when it may proceed.

        Every address must be public; one non-public address refuses the whole name (a name
        that resolves to public and private addresses could be answered either way).
        """
        try:
            name = normalise_host(host)
        except ValueError:
            return f"{host!r} is not a valid host name"
        if (name, port) in self.allowed:
            return None
        addresses = list(ips)
        if not addresses:
            return f"{host} resolved to no address"
        for ip in addresses:
            why = refusal(ip)
            if why is not None:
                return (
                    f"{ip} ({host}) is not a public address ({why}); pass --allow-host "
                    f"{_display(name, port)} to fetch from it"
                )
        return None


async def system_resolve(host: str, port: int) -> list[str]:
    """The addresses ``host`` resolves to, through the event loop's getaddrinfo."""
    loop = asyncio.get_running_loop()
    infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return list(dict.fromkeys(str(info[4][0]) for info in infos))


def _ip(text: str) -> IPAddress:
    return ipaddress.ip_address(text.split("%", 1)[0])


class GuardedBackend(httpcore.AsyncNetworkBackend):
    """An httpcore network backend that resolves, checks and then connects to the checked IP.

    Raises :class:`BlockedAddress` when the policy refuses. Use it only without a proxy
    (``trust_env=False``): through a proxy the proxy resolves names, and the guard would only
    see the proxy's address.
    """

    def __init__(
        self,
        policy: AddressPolicy,
        *,
        resolver: Resolver = system_resolve,
        inner: httpcore.AsyncNetworkBackend | None = None,
    ) -> None:
        self.policy = policy
        self._resolve = resolver
        self._inner = inner if inner is not None else httpcore.AnyIOBackend()

    async def connect_tcp(
        self,
        host: str,
        port: int,
        timeout: float | None = None,
        local_address: str | None = None,
        socket_options: Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        try:
            async with asyncio.timeout(timeout):
                addresses = list(await self._resolve(host, port))
        except TimeoutError:
            raise httpcore.ConnectTimeout(f"looking up {host} timed out") from None
        except OSError as exc:
            raise httpcore.ConnectError(f"cannot look up {host}: {exc}") from None
        try:
            ips = [_ip(a) for a in addresses]
        except ValueError:
            raise httpcore.ConnectError(f"{host} resolved to a non-IP address") from None
        why = self.policy.check(host, port, ips)
        if why is not None:
            raise BlockedAddress(why)
        error: Exception = httpcore.ConnectError(f"{host} resolved to no address")
        for address in addresses:
            try:
                return await self._inner.connect_tcp(
                    address,
                    port,
                    timeout=timeout,
                    local_address=local_address,
                    socket_options=socket_options,
                )
            except (httpcore.ConnectError, httpcore.ConnectTimeout) as exc:
                error = exc
        raise error

    async def connect_unix_socket(
        self,
        path: str,
        timeout: float | None = None,
        socket_options: typing.Iterable[httpcore.SOCKET_OPTION] | None = None,
    ) -> httpcore.AsyncNetworkStream:
        raise BlockedAddress(f"unix socket {path} is not a web address")

    async def sleep(self, seconds: float) -> None:
        await self._inner.sleep(seconds)
