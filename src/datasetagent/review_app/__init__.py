"""The local review web app (``datasetagent review RUN --serve``); needs the ``web`` extra."""

from __future__ import annotations

import ipaddress
import socket
from typing import TYPE_CHECKING

from datasetagent.errors import UsageError

if TYPE_CHECKING:
    from datasetagent.review_app.session import ReviewSession


def is_loopback(host: str) -> bool:
    """Whether ``host`` names this machine only (127.0.0.0/8, ::1, localhost)."""
    if host.lower() == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def bind(host: str, port: int) -> socket.socket:
    """A listening socket on ``host:port`` (port 0: a free one), or a one-line error."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host.strip("[]"), port))
        sock.listen(128)
    except OSError as exc:
        sock.close()
        raise UsageError(
            f"cannot serve on {host}:{port}: {exc.strerror}; pick another --port (0 picks a "
            "free one) or --host"
        ) from exc
    return sock


def serve(session: ReviewSession, sock: socket.socket, host: str) -> None:
    """Serve ``session`` on the bound ``sock`` until interrupted (Ctrl-C)."""
    import uvicorn

    from datasetagent.review_app.app import create_app

    port = int(sock.getsockname()[1])
    app = create_app(session, host, port)
    config = uvicorn.Config(app, log_level="warning", access_log=False, lifespan="off")
    uvicorn.Server(config).run(sockets=[sock])
