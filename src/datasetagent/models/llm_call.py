"""One connection to an OpenAI-compatible endpoint: structured calls with retries and usage.

:class:`LLMClient` is what the ``llm`` labeler, LLM planning and the LLM tool policy share: it
resolves a model string (``llm_endpoint``), reads the key from the environment, builds the
pydantic-ai provider and model, and runs pydantic-ai agents with

* resends after a 429, 5xx, timeout or dropped connection (``max_retries``, exponential
  ``backoff`` with jitter, at least what the server asked for, capped at ``max_backoff``);
* the reply type wrapped in the endpoint's output mode (tool, native JSON schema, prompted);
  a reply that fails validation is asked for again with the error (``output_retries``);
* every request and token counted in ``usage``;
* a one-line ``BackendError`` for what no retry fixes (key refused, model not found, quota
  used up, server unreachable) naming the model, the URL and the fix;
* reply bodies read up to ``max_reply_mb`` only: a longer one fails that call, unread;
* an optional :class:`CallGate` that every HTTP request must pass, so a run's model-call and
  time budget holds per request: a refused request ends the batch with :class:`BudgetSpent`.

A call that still fails (no valid reply, a rejected request, retries used up) returns
:class:`Failed`; what to do then is the caller's choice. pydantic-ai is imported when a client
is built, never at import.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import os
import random
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar
from urllib.parse import unquote, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datasetagent.errors import BackendError, ConfigError
from datasetagent.models import Usage, boxparse
from datasetagent.models.llm_endpoint import Endpoint, OutputMode, api_key, parse_model, redact_url

if TYPE_CHECKING:
    import httpx2
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

log = logging.getLogger(__name__)

EXTRA_MESSAGE = "the llm labeler needs the llm extra: pip install 'datasetagent[llm]'"
T = TypeVar("T")


class LLMOptions(BaseModel):
    """The backend's options, validated (strings from the command line are converted)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    base_url: str | None = None
    api_key_env: str | None = None
    max_side: int = Field(768, ge=16)
    timeout: float = Field(60.0, gt=0)
    max_retries: int = Field(4, ge=0, le=20)
    backoff: float = Field(1.0, ge=0)
    max_backoff: float = Field(30.0, ge=0)
    concurrency: int = Field(4, ge=1, le=256)
    output_mode: OutputMode | Literal["auto"] = "auto"
    output_retries: int = Field(2, ge=0, le=10)
    box_coords: boxparse.Coords = "auto"
    temperature: float | None = Field(None, ge=0)
    #: Reply bodies longer than this many megabytes are not read: that call fails.
    max_reply_mb: float = Field(8.0, gt=0)

    @classmethod
    def parse(cls, options: Mapping[str, object] | LLMOptions | None) -> LLMOptions:
        if isinstance(options, LLMOptions):
            return options
        try:
            return cls.model_validate(dict(options or {}))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(
                f"bad llm option(s): {problems} (known: {', '.join(cls.model_fields)})"
            ) from exc

    def endpoint(self, model: str | None) -> Endpoint:
        """Resolve ``model`` (a model string without the ``llm:`` prefix) with these options."""
        return parse_model(
            model,
            base_url=self.base_url,
            api_key_env=self.api_key_env,
            output_mode=self.output_mode,
        )


class BudgetSpent(Exception):
    """A model request was refused because the run's budget is spent (see :class:`CallGate`)."""


class ReplyTooLarge(Exception):
    """A reply body went past ``max_reply_mb``; reading stopped there."""


class CallGate:
    """The run's budget as every model request sees it: thread-safe, one ``take`` per request.

    ``allow(calls, deadline)`` sets how many more requests may go out (None: no limit) and the
    ``time.monotonic()`` after which none may, with the reason each refusal gives; ``take``
    counts one request or raises ``BudgetSpent``.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._calls: int | None = None
        self._deadline: float | None = None
        self._reasons = ("budget spent: model calls", "budget spent: time")

    def allow(
        self,
        calls: int | None,
        deadline: float | None = None,
        *,
        calls_reason: str = "budget spent: model calls",
        time_reason: str = "budget spent: time",
    ) -> None:
        with self._lock:
            self._calls, self._deadline = calls, deadline
            self._reasons = (calls_reason, time_reason)

    def take(self) -> None:
        with self._lock:
            if self._deadline is not None and time.monotonic() >= self._deadline:
                raise BudgetSpent(self._reasons[1])
            if self._calls is not None:
                if self._calls <= 0:
                    raise BudgetSpent(self._reasons[0])
                self._calls -= 1


@dataclass(frozen=True)
class Failed:
    """One call that gave no valid answer, and why.

    ``invalid`` when the model answered but no reply passed validation within the output
    retries; ``detail`` is then the last validation error (what the model was last told).
    """

    reason: str
    detail: str = ""
    invalid: bool = False


class LLMClient:
    """Provider, model, options and usage of one endpoint (see the module docstring).

    No request is made when it is built. Not thread-safe: callers that share one client
    between threads serialise their :meth:`run` calls.
    """

    def __init__(
        self,
        endpoint: Endpoint,
        options: LLMOptions,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        self.endpoint = endpoint
        self.options = options
        self.usage = Usage()
        #: Every request passes it (set by the run that owns the budget); None: no budget.
        self.gate: CallGate | None = None
        self.provider, self.model = _connect(
            endpoint,
            api_key(endpoint, os.environ if environ is None else environ),
            options,
            lambda: self.gate,
        )

    @classmethod
    def from_model(
        cls,
        model: str | None,
        options: Mapping[str, object] | LLMOptions | None = None,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> LLMClient:
        """Parse ``options`` and the model string, read the key from ``environ`` (default
        ``os.environ``). Raises ``ConfigError``/``BackendError`` with the fix."""
        parsed = LLMOptions.parse(options)
        return cls(parsed.endpoint(model), parsed, environ=environ)

    # -- agents ------------------------------------------------------------------------------

    def agent(
        self,
        output: Any,
        *,
        instructions: str,
        output_retries: int | None = None,
    ) -> Agent[None, Any]:
        """A pydantic-ai agent on this model. A pydantic model class as ``output`` is wrapped
        in the endpoint's output mode; anything else (``TextOutput`` …) is used as given."""
        from pydantic_ai import Agent, NativeOutput, PromptedOutput, ToolOutput

        if isinstance(output, type) and issubclass(output, BaseModel):
            wrap = {"tool": ToolOutput, "native": NativeOutput, "prompted": PromptedOutput}
            output = wrap[self.endpoint.output_mode](output)
        retries = self.options.output_retries if output_retries is None else output_retries
        return Agent(
            self.model, output_type=output, instructions=instructions, retries={"output": retries}
        )

    # -- calls -------------------------------------------------------------------------------

    def run(self, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
        """Run coroutine factories, ``concurrency`` at a time, from sync code; results in
        order. A ``BackendError`` from any job ends the batch and is raised."""
        if not jobs:
            return []
        return _run_sync(self._gather(jobs))

    def call(self, agent: Agent[None, Any], parts: list[Any] | str) -> Any:
        """One request (with retries), from sync code: the validated output or ``Failed``."""
        parts_list = [parts] if isinstance(parts, str) else parts
        return self.run([lambda: self.ask(agent, parts_list)])[0]

    async def _gather(self, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
        limit = asyncio.Semaphore(self.options.concurrency)
        refused: list[BudgetSpent] = []

        async def one(job: Callable[[], Awaitable[T]]) -> T | None:
            async with limit:
                if refused:
                    return None
                try:
                    return await job()
                except BudgetSpent as exc:  # the requests in flight still finish and count
                    refused.append(exc)
                    return None

        async with self.provider:  # one HTTP client per batch, closed with its event loop
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(one(job)) for job in jobs]
            except BaseExceptionGroup as group_error:  # a configuration error ends the batch
                first = group_error.exceptions[0]
                raise next(
                    (
                        e
                        for e in group_error.exceptions
                        if isinstance(e, BackendError | BudgetSpent)
                    ),
                    first,
                ) from None
        if refused:
            raise refused[0]
        return [t.result() for t in tasks]  # type: ignore[misc]

    async def ask(self, agent: Agent[None, Any], parts: list[Any]) -> Any:
        """One request with retries; the validated output or ``Failed``."""
        from pydantic_ai import RunUsage
        from pydantic_ai.exceptions import (
            ModelAPIError,
            ModelAuthenticationError,
            ModelConnectionError,
            ModelNotFoundError,
            ModelQuotaExceededError,
            ModelRateLimitError,
            ModelRequestTimeout,
            ModelServerError,
            ModelUnavailableError,
            UnexpectedModelBehavior,
        )

        transient = (
            ModelRateLimitError,
            ModelServerError,
            ModelUnavailableError,
            ModelConnectionError,
            ModelRequestTimeout,
        )
        last: Exception | None = None
        for attempt in range(self.options.max_retries + 1):
            if attempt:
                self.usage.retries += 1
                await asyncio.sleep(self._delay(attempt - 1, last))
            run_usage = RunUsage()
            try:
                result = await _guarded(agent.run(parts, usage=run_usage))
            except BudgetSpent:
                self._account(run_usage, failed_request=False)
                raise
            except ReplyTooLarge as exc:  # no retry: the same request would get it again
                self._account(run_usage, failed_request=True)
                return Failed(str(exc))
            except (ModelAuthenticationError, ModelNotFoundError, ModelQuotaExceededError) as exc:
                self._account(run_usage, failed_request=True)
                raise BackendError(self._refused(exc)) from exc
            except transient as exc:
                self._account(run_usage, failed_request=True)
                last = exc
                continue
            except ModelAPIError as exc:  # a request the server rejects (400)
                self._account(run_usage, failed_request=True)
                return Failed(one_line(exc))
            except UnexpectedModelBehavior as exc:  # no valid reply within the output retries
                self._account(run_usage, failed_request=False)
                cause = exc.__cause__
                return Failed(one_line(exc), one_line(cause) if cause else "", invalid=True)
            self._account(run_usage, failed_request=False)
            return result.output
        if isinstance(last, ModelConnectionError) and last.phase == "connect":
            raise BackendError(self._unreachable(last))
        return Failed(f"{one_line(last)} (after {self.options.max_retries} retries)")

    def _account(self, run: Any, *, failed_request: bool) -> None:
        """Add one run's requests and tokens; every request after a run's first is an output
        retry (the reply failed validation and was asked for again)."""
        calls = int(run.requests) + int(failed_request)
        self.usage.calls += calls
        self.usage.retries += max(0, calls - 1)
        self.usage.input_tokens += int(run.input_tokens)
        self.usage.output_tokens += int(run.output_tokens)

    def _delay(self, attempt: int, exc: Exception | None) -> float:
        """Exponential backoff with jitter, at least what the server asked for (capped)."""
        o = self.options
        delay = min(o.max_backoff, o.backoff * 2.0**attempt) * (0.5 + random.random() / 2)
        asked = getattr(exc, "retry_after", None)
        if isinstance(asked, int | float) and asked > 0:
            return max(delay, min(float(asked), o.max_backoff))
        return delay

    def _refused(self, exc: Exception) -> str:
        """The one-line message for a refusal that no retry can fix."""
        from pydantic_ai.exceptions import ModelNotFoundError, ModelQuotaExceededError

        e = self.endpoint
        status = getattr(exc, "status_code", None)
        code = f" (HTTP {status})" if status else ""
        if isinstance(exc, ModelQuotaExceededError):
            return (
                f"{e.shown_url} refused llm model {e.label}{code}: the account's quota or "
                "credits are used up; top them up or choose another model"
            )
        if isinstance(exc, ModelNotFoundError):
            pull = f" or pull it (ollama pull {e.model})" if e.provider == "ollama" else ""
            return (
                f"llm model {e.model!r} was not found at {e.shown_url}{code}: check the model "
                f"name{pull} and the base_url"
            )
        fix = (
            f"check the key in {e.key_env}"
            if e.key_env
            else "set the api_key_env option to the variable that holds its key"
        )
        return f"{e.shown_url} refused the request for llm model {e.label}{code}: {fix}"

    def _unreachable(self, exc: Exception) -> str:
        e = self.endpoint
        start = " (start it with: ollama serve)" if e.provider == "ollama" else ""
        return (
            f"cannot reach {e.shown_url} for llm model {e.label}: {one_line(exc)}; is the server "
            f"running{start}? Set the base_url option if it listens elsewhere"
        )


async def _guarded(run: Awaitable[T]) -> T:
    """``await run``, with ``BudgetSpent`` and ``ReplyTooLarge`` raised as themselves however
    the HTTP client and pydantic-ai wrapped them."""
    try:
        return await run
    except (BudgetSpent, ReplyTooLarge):
        raise
    except Exception as exc:
        seen: set[int] = set()
        cause: BaseException | None = exc
        while cause is not None and id(cause) not in seen:
            if isinstance(cause, BudgetSpent | ReplyTooLarge):
                raise cause from None
            seen.add(id(cause))
            cause = cause.__cause__ or cause.__context__
        raise


def one_line(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split()) if exc is not None else "no reply"
    return (text[:300] + "…") if len(text) > 300 else text


def _run_sync(coro: Awaitable[T]) -> T:
    """Run a coroutine to completion from sync code, also when the caller is inside an event
    loop (then on a helper thread, as one loop cannot be re-entered)."""

    async def main() -> T:
        return await coro

    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(main())
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="llm-batch") as pool:
        return pool.submit(asyncio.run, main()).result()


def _split_credentials(url: str) -> tuple[str, str | None]:
    """``url`` without its ``user:password@`` part, and the Basic ``Authorization`` header
    value that part stands for (None without one): sent as a header, the credentials never
    appear in a URL that the HTTP libraries log."""
    parts = urlsplit(url)
    if "@" not in parts.netloc:
        return url, None
    userinfo, _, host = parts.netloc.rpartition("@")
    user, _, password = userinfo.partition(":")
    token = base64.b64encode(f"{unquote(user)}:{unquote(password)}".encode()).decode()
    return urlunsplit(parts._replace(netloc=host)), f"Basic {token}"


def _guard_transport(
    inner: httpx2.AsyncBaseTransport,
    max_bytes: int,
    gate: Callable[[], CallGate | None],
    authorization: str | None = None,
) -> httpx2.AsyncBaseTransport:
    """A transport that asks ``gate`` before each request, sends ``authorization`` (the
    credentials of the base URL) and stops reading a reply body at ``max_bytes``
    (``ReplyTooLarge``), so a huge or endless reply never fills memory."""
    import httpx2

    class Capped(httpx2.AsyncByteStream):
        def __init__(self, stream: httpx2.AsyncByteStream, where: str) -> None:
            self.stream, self.where = stream, where

        async def __aiter__(self) -> AsyncIterator[bytes]:
            read = 0
            async for chunk in self.stream:
                read += len(chunk)
                if read > max_bytes:
                    raise ReplyTooLarge(_too_large(self.where, max_bytes))
                yield chunk

        async def aclose(self) -> None:
            await self.stream.aclose()

    class Guarded(httpx2.AsyncBaseTransport):
        async def handle_async_request(self, request: httpx2.Request) -> httpx2.Response:
            g = gate()
            if g is not None:
                g.take()
            if authorization is not None:
                request.headers["Authorization"] = authorization
            response = await inner.handle_async_request(request)
            where = redact_url(str(request.url))
            length = response.headers.get("content-length", "")
            if length.isdigit() and int(length) > max_bytes:
                await response.aclose()
                raise ReplyTooLarge(_too_large(where, max_bytes))
            assert isinstance(response.stream, httpx2.AsyncByteStream)
            return httpx2.Response(
                response.status_code,
                headers=response.headers,
                stream=Capped(response.stream, where),
                extensions=response.extensions,
                request=request,
            )

        async def aclose(self) -> None:
            await inner.aclose()

    return Guarded()


def _too_large(where: str, max_bytes: int) -> str:
    return (
        f"the reply from {where} is over {max_bytes / 2**20:g} MB and was not read; raise the "
        "llm option max_reply_mb if the server really answers that much"
    )


def _connect(
    endpoint: Endpoint,
    key: str,
    options: LLMOptions,
    gate: Callable[[], CallGate | None] = lambda: None,
) -> tuple[OpenAIProvider, OpenAIChatModel]:
    """The pydantic-ai provider and model; no request is made. The SDK's own retries are off
    because ``ask`` retries with its own backoff and counts every attempt. Its HTTP clients
    (one per event loop, made by the provider as needed) send through ``_guard_transport``."""
    try:
        import httpx2
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        from pydantic_ai.settings import ModelSettings
    except ImportError as exc:
        raise BackendError(EXTRA_MESSAGE) from exc
    from pydantic_ai.models import create_async_httpx2_client

    settings = ModelSettings(timeout=options.timeout, max_retries=0)
    if options.temperature is not None:
        settings["temperature"] = options.temperature
    max_bytes = int(options.max_reply_mb * 2**20)

    base_url, authorization = _split_credentials(endpoint.base_url)

    def client() -> httpx2.AsyncClient:
        inner = httpx2.AsyncHTTPTransport()
        transport = _guard_transport(inner, max_bytes, gate, authorization)
        return create_async_httpx2_client(transport=transport)

    provider = OpenAIProvider(base_url=base_url, api_key=key)
    # The provider makes a client per event loop with its factory (each batch runs on a fresh
    # loop); a client passed in would be bound to the first loop, so the factory is replaced.
    provider._http_client_factory = client
    provider._own_http_client = own = client()
    provider._set_http_client(own)
    return provider, OpenAIChatModel(endpoint.model, provider=provider, settings=settings)
