"""The safe HTTP layer of the web sources: an SSRF guard and a bounded, polite async client.

Every web source and the download stage fetch through :class:`WebClient`; every connection it
makes is checked by :class:`AddressPolicy` at connect time (see :mod:`datasetagent.web.guard`).
"""

from __future__ import annotations

from datasetagent.web.guard import (
    ALLOW_HOST_HELP,
    AddressPolicy,
    BlockedAddress,
    parse_allow_host,
    refusal,
)
from datasetagent.web.http import (
    REASONS,
    Fetched,
    FetchError,
    Limits,
    WebClient,
    WebStats,
    fetch_all,
    redact,
    sniff_image,
    user_agent,
)

__all__ = [
    "ALLOW_HOST_HELP", "REASONS", "AddressPolicy", "BlockedAddress", "FetchError", "Fetched",
    "Limits", "WebClient", "WebStats", "fetch_all", "parse_allow_host", "redact", "refusal",
    "sniff_image", "user_agent",
]  # fmt: skip
