"""The safe HTTP layer of the web sources: an SSRF guard and a bounded, polite async client."""

from __future__ import annotations
