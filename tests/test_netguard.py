"""The suite's network guard refuses anything but loopback, here and in subprocesses."""

from __future__ import annotations

import socket
import subprocess
import sys
import threading

import pytest

from netguard import NetworkBlocked, is_loopback


@pytest.mark.parametrize(
    ("host", "loopback"),
    [
        ("127.0.0.1", True),
        ("127.5.6.7", True),
        ("::1", True),
        ("[::1]", True),
        ("localhost", True),
        ("10.0.0.1", False),
        ("192.168.1.1", False),
        ("8.8.8.8", False),
        ("example.org", False),
        ("::ffff:8.8.8.8", False),
    ],
)
def test_loopback_test(host: str, loopback: bool) -> None:
    assert is_loopback(host) is loopback


def test_outbound_connections_and_lookups_are_refused_before_they_leave() -> None:
    with socket.socket() as s, pytest.raises(NetworkBlocked, match=r"10\.255\.255\.1"):
        s.connect(("10.255.255.1", 80))
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s, pytest.raises(NetworkBlocked):
        s.sendto(b"x", ("8.8.8.8", 53))
    with pytest.raises(NetworkBlocked, match=r"example\.org"):
        socket.getaddrinfo("example.org", 443)
    with pytest.raises(NetworkBlocked):
        socket.create_connection(("192.0.2.1", 443), timeout=1)


def test_loopback_still_works() -> None:
    with socket.socket() as server:
        server.bind(("127.0.0.1", 0))
        server.listen(1)
        port = server.getsockname()[1]
        accepted: list[bytes] = []

        def serve() -> None:
            conn, _ = server.accept()
            with conn:
                accepted.append(conn.recv(5))

        thread = threading.Thread(target=serve)
        thread.start()
        with socket.create_connection(("localhost", port), timeout=5) as client:
            client.sendall(b"hello")
        thread.join(5)
    assert accepted == [b"hello"]


def test_subprocesses_are_guarded_too() -> None:
    code = (
        "import socket\n"
        "try:\n"
        "    socket.create_connection(('203.0.113.9', 80), timeout=1)\n"
        "except OSError as exc:\n"
        "    print(type(exc).__name__)\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "NetworkBlocked"
