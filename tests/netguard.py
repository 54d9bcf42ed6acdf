"""The test suite's network guard: only loopback connections, in this process and its children.

Installed for the whole session by ``conftest.py`` and, through ``netguard_site/sitecustomize.py``
on ``PYTHONPATH``, in every Python subprocess a test starts (CLI runs, killed builds, workers).
A connection, a datagram or a name lookup towards anything but the loopback range raises
:class:`NetworkBlocked` before a packet leaves.
"""

from __future__ import annotations

import ipaddress
import socket
from typing import Any

_LOCAL_NAMES = {"localhost", "localhost.localdomain", "ip6-localhost", "ip6-loopback"}


class NetworkBlocked(OSError):
    """A test tried to reach a non-loopback address."""


def is_loopback(host: object) -> bool:
    if host is None:
        return True  # getaddrinfo(None, port): the local wildcard, used to bind servers
    if isinstance(host, bytes):
        host = host.decode("ascii", "replace")
    if not isinstance(host, str):
        return False
    name = host.strip("[]").split("%", 1)[0].lower()
    if name in _LOCAL_NAMES or name == "":
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def _check(sock: socket.socket, address: Any) -> None:
    if sock.family in (socket.AF_INET, socket.AF_INET6) and not is_loopback(address[0]):
        raise NetworkBlocked(f"tests may only reach loopback addresses, not {address!r}")


def install() -> None:
    """Patch the socket module once; idempotent."""
    if getattr(socket, "_netguard_installed", False):
        return
    connect, connect_ex, sendto = (
        socket.socket.connect,
        socket.socket.connect_ex,
        socket.socket.sendto,
    )
    getaddrinfo = socket.getaddrinfo

    def guarded_connect(self: socket.socket, address: Any) -> None:
        _check(self, address)
        connect(self, address)

    def guarded_connect_ex(self: socket.socket, address: Any) -> int:
        _check(self, address)
        return connect_ex(self, address)

    def guarded_sendto(self: socket.socket, data: Any, *args: Any) -> int:
        _check(self, args[-1])
        return sendto(self, data, *args)  # type: ignore[arg-type]

    def guarded_getaddrinfo(host: Any, *args: Any, **kwargs: Any) -> Any:
        if not is_loopback(host):
            raise NetworkBlocked(f"tests may only look up loopback names, not {host!r}")
        return getaddrinfo(host, *args, **kwargs)

    socket.socket.connect = guarded_connect  # type: ignore[method-assign]
    socket.socket.connect_ex = guarded_connect_ex  # type: ignore[method-assign]
    socket.socket.sendto = guarded_sendto  # type: ignore[method-assign,assignment]
    socket.getaddrinfo = guarded_getaddrinfo
    socket._netguard_installed = True  # type: ignore[attr-defined]
