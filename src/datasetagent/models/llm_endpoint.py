"""Where an ``llm`` model string points: provider, model name, base URL, API key, output mode.

Pure functions of the model string, the options and the environment, so the whole table of
accepted strings is tested without a server. Nothing here imports the ``llm`` extra.

* ``openai:gpt-4o-mini``, ``gemini:gemini-2.5-flash``: hosted; the key comes from
  ``OPENAI_API_KEY`` / ``GEMINI_API_KEY`` (or the variable named by ``api_key_env``).
* ``ollama:qwen2.5vl:7b``, ``vllm:...``, ``lmstudio:...``, ``llamacpp:...``: local servers at
  their usual default URLs; no key unless ``api_key_env`` names one. Everything after the first
  colon is the model name, colons included.
* ``base_url`` option plus a bare model name (``qwen2.5vl:7b``): any other OpenAI-compatible
  server. A known provider prefix still selects that provider's key and output mode, so
  ``openai:gpt-4o`` with a ``base_url`` reaches a proxy of OpenAI.
"""

from __future__ import annotations

import difflib
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit

from datasetagent.errors import BackendError, ConfigError

OutputMode = Literal["tool", "native", "prompted"]
#: The key sent to servers that need none: the openai client insists on one, and sending a
#: real key from the environment to a local server would leak it.
NO_KEY = "not-needed"
#: The provider of a bare model name served at an explicit ``base_url``.
CUSTOM = "custom"


@dataclass(frozen=True)
class ProviderInfo:
    """A provider's defaults: where it listens, which variable holds its key, whether it is
    hosted (a key is then required), and the output mode it honours."""

    base_url: str
    key_env: str | None
    hosted: bool
    output_mode: OutputMode


#: Hosted APIs honour ``tool_choice`` and get tool output; local servers get JSON-schema output
#: because some (Ollama) ignore ``tool_choice`` and answer in prose.
PROVIDERS: dict[str, ProviderInfo] = {
    "openai": ProviderInfo("https://api.openai.com/v1", "OPENAI_API_KEY", True, "tool"),
    "gemini": ProviderInfo(
        "https://generativelanguage.googleapis.com/v1beta/openai/", "GEMINI_API_KEY", True, "tool"
    ),
    "ollama": ProviderInfo("http://localhost:11434/v1", None, False, "native"),
    "vllm": ProviderInfo("http://localhost:8000/v1", None, False, "native"),
    "lmstudio": ProviderInfo("http://localhost:1234/v1", None, False, "native"),
    "llamacpp": ProviderInfo("http://localhost:8080/v1", None, False, "native"),
}

EXAMPLES = "llm:ollama:qwen2.5vl:7b or llm:openai:gpt-4o-mini"
#: Query parameters whose values are secrets (``?key=…``, ``api_key=…``, ``token=…``).
_SECRET_PARAM = re.compile(r"(key|token|secret|password|passwd|auth|signature|sig)", re.I)


def redact_url(url: str) -> str:
    """``url`` fit to store, log and print: credentials in it (``user:key@``, secret query
    parameters) replaced by ``***``. The request itself still uses the full URL."""
    try:
        parts = urlsplit(url)
    except ValueError:
        return "***"
    netloc = parts.netloc
    if "@" in netloc:
        netloc = "***@" + netloc.rpartition("@")[2]
    query = parts.query
    if query:
        pairs = parse_qsl(query, keep_blank_values=True)
        query = urlencode(
            [(k, "***" if _SECRET_PARAM.search(k) else v) for k, v in pairs], safe="*"
        )
    return urlunsplit((parts.scheme, netloc, parts.path, query, parts.fragment))


@dataclass(frozen=True)
class Endpoint:
    """A resolved model string. ``key_env`` is the variable the key is read from, if any."""

    provider: str
    model: str
    base_url: str
    key_env: str | None
    hosted: bool
    output_mode: OutputMode

    @property
    def shown_url(self) -> str:
        """``base_url`` without the credentials it may hold, for messages."""
        return redact_url(self.base_url)

    @property
    def label(self) -> str:
        """``provider:model`` for messages and provenance."""
        return self.model if self.provider == CUSTOM else f"{self.provider}:{self.model}"


def parse_model(
    model: str | None,
    *,
    base_url: str | None = None,
    api_key_env: str | None = None,
    output_mode: OutputMode | Literal["auto"] = "auto",
) -> Endpoint:
    """Resolve a model string (without the ``llm:`` labeler prefix).

    Raises ``ConfigError`` naming the fix for a missing model, an unknown provider (with "did
    you mean …?") or an empty model name.
    """
    text = (model or "").strip()
    if not text:
        raise ConfigError(f"the llm labeler needs a model, e.g. {EXAMPLES}")
    prefix, sep, rest = text.partition(":")
    info = PROVIDERS.get(prefix.strip().lower()) if sep else None
    if info is not None:
        provider, name = prefix.strip().lower(), rest.strip()
    elif base_url:
        provider, name = CUSTOM, text
        info = ProviderInfo(base_url, None, False, "native")
    else:
        close = difflib.get_close_matches(prefix.strip().lower(), PROVIDERS, n=1)
        hint = f"did you mean {close[0]!r}? " if close and sep else ""
        raise ConfigError(
            f"unknown llm provider in {text!r}: {hint}use one of {', '.join(PROVIDERS)} "
            f"(e.g. {EXAMPLES}), or set the base_url option for another server"
        )
    if not name:
        raise ConfigError(f"the llm model string {text!r} names no model, e.g. {EXAMPLES}")
    return Endpoint(
        provider=provider,
        model=name,
        base_url=(base_url or info.base_url).rstrip("/"),
        key_env=api_key_env or info.key_env,
        hosted=info.hosted,
        output_mode=info.output_mode if output_mode == "auto" else output_mode,
    )


def api_key(endpoint: Endpoint, environ: Mapping[str, str]) -> str:
    """The key to send: from the endpoint's variable, or ``NO_KEY`` where none is needed.

    A hosted provider's variable, or one named by ``api_key_env``, without a value is a
    ``BackendError`` naming the variable, raised before any request is made.
    """
    if endpoint.key_env is None:
        return NO_KEY
    value = environ.get(endpoint.key_env, "").strip()
    if not value:
        raise BackendError(
            f"the llm model {endpoint.label} needs an API key: set the environment variable "
            f"{endpoint.key_env}"
        )
    return value
