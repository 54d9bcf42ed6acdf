"""The ``llm`` backend: an MLLM behind any OpenAI-compatible endpoint, in every labelling role.

``LLMBackend`` is an ``ImageClassifier``, ``LabelVerifier``, ``ObjectDetector`` and
``UsabilityJudge``; it is registered as the ``llm`` labeler, built from a ``BackendConfig``
whose ``model`` is a model string (``ollama:qwen2.5vl:7b``, ``openai:gpt-4o-mini``; see
``llm_endpoint``). Requests go through pydantic-ai, which validates structured replies and
asks again with the validation error when a reply does not fit; agent code never sees it.
pydantic-ai is imported when a backend is built, so importing this module needs only the core
install and touches no network.

Options (``BackendConfig.options``), with defaults:

* ``base_url`` (provider default), ``api_key_env`` (provider default): where and with which
  key; keys are read from environment variables only;
* ``max_side`` 768: images are sent inline, the longer side shrunk to this many pixels;
* ``timeout`` 60 s per request; ``max_retries`` 4 resends after a 429, 5xx, timeout or dropped
  connection, waiting ``backoff`` 1 s doubling up to ``max_backoff`` 30 s;
* ``concurrency`` 4: a batch is sent as that many requests at a time, one image each;
* ``output_mode`` auto (tool output for openai/gemini, JSON-schema output for local servers)
  or tool | native | prompted; ``output_retries`` 2: resends of a reply that failed validation.
  Detection always asks for text in the Qwen-VL box format that grounding models are trained
  on, read by ``boxparse``;
* ``box_coords`` auto | pixel | norm1 | norm1000 (see ``boxparse``); ``temperature`` unset.

How failures surface: a configuration error (no key, key refused, model or URL not found,
server unreachable) raises a one-line ``BackendError`` that names the model and URL. One image
whose request still fails after the retries, or whose replies never validate, is counted in
``usage.failures``, listed in ``last_failed``, and gets the answer that sends it to review:
``Prediction(NONE_LABEL, 0.0, {})``, ``Verdict(agree=False, confidence=0.0)``, no detections,
or ``Usability(usable=True, reason="not judged: …")`` (no opinion is not a rejection).
"""

from __future__ import annotations

import asyncio
import base64
import importlib.util
import io
import logging
import os
import random
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from PIL import Image
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from datasetagent.errors import BackendError, ConfigError
from datasetagent.models import (
    BACKENDS,
    NONE_LABEL,
    BackendConfig,
    ClassQuery,
    Detection,
    Prediction,
    Prepared,
    Usability,
    Usage,
    Verdict,
    boxparse,
    llm_schema,
)
from datasetagent.models.llm_endpoint import (
    PROVIDERS,
    Endpoint,
    OutputMode,
    api_key,
    parse_model,
)

if TYPE_CHECKING:
    from pydantic_ai import Agent
    from pydantic_ai.models.openai import OpenAIChatModel
    from pydantic_ai.providers.openai import OpenAIProvider

log = logging.getLogger(__name__)

EXTRA_MESSAGE = "the llm labeler needs the llm extra: pip install 'datasetagent[llm]'"
T = TypeVar("T")
Role = Literal["classify", "verify", "detect", "judge"]


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

    @classmethod
    def parse(cls, options: Mapping[str, object]) -> LLMOptions:
        try:
            return cls.model_validate(dict(options))
        except ValidationError as exc:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'options'}: {e['msg']}" for e in exc.errors()
            )
            raise ConfigError(
                f"bad llm option(s): {problems} (known: {', '.join(cls.model_fields)})"
            ) from None


@dataclass(frozen=True)
class EncodedImage:
    """An image as sent: encoded bytes, their media type, and the original and sent sizes."""

    data: bytes
    media_type: str
    size: tuple[int, int]
    sent_size: tuple[int, int]

    @property
    def data_url(self) -> str:
        return f"data:{self.media_type};base64,{base64.b64encode(self.data).decode()}"


def encode_image(image: Image.Image, max_side: int) -> EncodedImage:
    """Shrink so the longer side is at most ``max_side`` and encode: PNG where the image has
    transparency (JPEG would flatten it onto black), JPEG (quality 90) otherwise, which is
    several times smaller for photos and so cheaper in upload and image tokens."""
    size = image.size
    img = image
    if max(size) > max_side:
        scale = max_side / max(size)
        sent = (max(1, round(size[0] * scale)), max(1, round(size[1] * scale)))
        img = image.resize(sent, Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    has_alpha = img.mode in ("RGBA", "LA", "PA") or (img.mode == "P" and "transparency" in img.info)
    if has_alpha:
        img.convert("RGBA").save(buf, format="PNG")
        media_type = "image/png"
    else:
        img.convert("RGB").save(buf, format="JPEG", quality=90)
        media_type = "image/jpeg"
    return EncodedImage(buf.getvalue(), media_type, size, img.size)


@dataclass(frozen=True)
class Failed:
    """One image's call that gave no valid answer, and why."""

    reason: str


class LLMBackend:
    """An MLLM as classifier, verifier, detector and usability judge (see the module docstring).

    Batches run one at a time per backend; within a batch, up to ``concurrency`` requests are
    in flight. ``prepare`` (resize and encode) is CPU work that may run on another thread, and
    every role method accepts its ``Prepared`` batch in place of the images.
    """

    def __init__(
        self,
        classes: Sequence[ClassQuery],
        endpoint: Endpoint,
        options: LLMOptions,
        *,
        environ: Mapping[str, str] | None = None,
    ) -> None:
        if not classes:
            raise ConfigError("the llm labeler needs at least one class to label")
        self.name = f"llm:{endpoint.label}"
        self.usage = Usage()
        self.endpoint = endpoint
        self.options = options
        #: Indices, in the last batch, of the images whose call failed (see the module docstring).
        self.last_failed: tuple[int, ...] = ()
        #: Boxes dropped from detection replies so far: malformed, degenerate or not a class.
        self.dropped_boxes = 0
        self._classes = tuple(classes)
        self._lock = threading.Lock()
        self._agents: dict[Role, Agent[None, Any]] = {}
        self._provider, self._model = _connect(
            endpoint, api_key(endpoint, os.environ if environ is None else environ), options
        )

    @classmethod
    def from_config(
        cls, config: BackendConfig, *, environ: Mapping[str, str] | None = None
    ) -> LLMBackend:
        """Build from a labeler config: parse the options and model string, read the key from
        ``environ`` (default ``os.environ``). No request is made."""
        options = LLMOptions.parse(config.options)
        endpoint = parse_model(
            config.model,
            base_url=options.base_url,
            api_key_env=options.api_key_env,
            output_mode=options.output_mode,
        )
        return cls(config.classes, endpoint, options, environ=environ)

    @property
    def classes(self) -> tuple[str, ...]:
        return llm_schema.class_names(self._classes)

    # -- roles -------------------------------------------------------------------------------

    def prepare(self, images: list[Image.Image]) -> Prepared:
        encoded = [encode_image(img, self.options.max_side) for img in images]
        return Prepared(sizes=[img.size for img in images], inputs={"encoded": encoded})

    def predict(self, images: list[Image.Image] | Prepared) -> list[Prediction]:
        """Classify each image among the classes or ``NONE_LABEL``; ``probs`` holds the
        answered label's confidence."""
        prompt = llm_schema.classify_prompt(self._classes)
        outs = self._batch("classify", [(prompt, e) for e in self._encoded(images)])
        preds = []
        for out in outs:
            if isinstance(out, llm_schema.ClassReply):
                preds.append(Prediction(out.label, out.confidence, {out.label: out.confidence}))
            else:
                preds.append(Prediction(NONE_LABEL, 0.0, {}))
        return preds

    def verify(self, images: list[Image.Image] | Prepared, labels: list[str]) -> list[Verdict]:
        """Ask "is this image a LABEL?" for each image; ``suggested`` is a class or None."""
        encoded = self._encoded(images)
        if len(labels) != len(encoded):
            raise ValueError(f"verify got {len(encoded)} images but {len(labels)} labels")
        for label in labels:
            if label != NONE_LABEL and label not in self.classes:
                raise ValueError(f"cannot verify {label!r}: not one of {', '.join(self.classes)}")
        prompts = [llm_schema.verify_prompt(self._classes, label) for label in labels]
        jobs = list(zip(prompts, encoded, strict=True))
        verdicts = []
        for out in self._batch("verify", jobs):
            if isinstance(out, llm_schema.VerifyReply):
                verdicts.append(Verdict(out.agree, out.confidence, out.suggested, out.reason))
            else:
                verdicts.append(Verdict(False, 0.0, None, f"not verified: {_reason(out)}"))
        return verdicts

    def detect(self, images: list[Image.Image] | Prepared) -> list[list[Detection]]:
        """Find the classes' objects; boxes in pixels of the images passed in, clipped.

        The model answers in Qwen-VL-style JSON text, read by ``boxparse``; a reply with no
        JSON at all is asked for again. Labels that are not classes are dropped, never kept.
        """
        encoded = self._encoded(images)
        coords = self.options.box_coords
        jobs = [(llm_schema.detect_prompt(self._classes, e.sent_size, coords), e) for e in encoded]
        table = llm_schema.aliases(self._classes, with_none=False)
        out: list[list[Detection]] = []
        for reply, e in zip(self._batch("detect", jobs), encoded, strict=True):
            if not isinstance(reply, boxparse.Extracted):
                out.append([])
                continue
            frame = boxparse.ReplyFrame(table, e.sent_size, e.size, coords)
            parsed = boxparse.to_detections(reply.boxes, frame)
            dropped = parsed.dropped + reply.malformed
            if dropped:
                log.debug("%s: dropped %d box(es) from a detection reply", self.name, dropped)
            with self._lock:
                self.dropped_boxes += dropped
            out.append(list(parsed.detections))
        return out

    def judge(self, images: list[Image.Image] | Prepared) -> list[Usability]:
        """Say whether each image can serve the spec's classes, and why not."""
        prompt = llm_schema.judge_prompt(self._classes)
        out = []
        for reply in self._batch("judge", [(prompt, e) for e in self._encoded(images)]):
            if isinstance(reply, llm_schema.JudgeReply):
                out.append(Usability(reply.usable, "" if reply.usable else reply.reason))
            else:
                out.append(Usability(True, f"not judged: {_reason(reply)}"))
        return out

    # -- machinery ---------------------------------------------------------------------------

    def _encoded(self, images: list[Image.Image] | Prepared) -> list[EncodedImage]:
        batch = images if isinstance(images, Prepared) else self.prepare(images)
        encoded: list[EncodedImage] = batch.inputs["encoded"]
        return encoded

    def _agent(self, role: Role) -> Agent[None, Any]:
        if role not in self._agents:
            self._agents[role] = _make_agent(
                role,
                self._classes,
                self._model,
                mode=self.endpoint.output_mode,
                output_retries=self.options.output_retries,
            )
        return self._agents[role]

    def _batch(self, role: Role, jobs: list[tuple[str, EncodedImage]]) -> list[Any]:
        """Run one request per (prompt, image), ``concurrency`` at a time; results in order."""
        from pydantic_ai import BinaryContent

        if not jobs:
            self.last_failed = ()
            return []
        agent = self._agent(role)

        def job(prompt: str, image: EncodedImage) -> Callable[[], Awaitable[Any]]:
            parts = [prompt, BinaryContent(data=image.data, media_type=image.media_type)]
            return lambda: self._ask(agent, parts)

        with self._lock:
            results = _run_sync(self._gather([job(p, e) for p, e in jobs]))
            self.usage.images += len(jobs)
            self.last_failed = tuple(i for i, r in enumerate(results) if isinstance(r, Failed))
            self.usage.failures += len(self.last_failed)
        for i in self.last_failed:
            log.warning("%s: image %d of the batch failed: %s", self.name, i, results[i].reason)
        return results

    async def _gather(self, jobs: list[Callable[[], Awaitable[T]]]) -> list[T]:
        limit = asyncio.Semaphore(self.options.concurrency)

        async def one(job: Callable[[], Awaitable[T]]) -> T:
            async with limit:
                return await job()

        async with self._provider:  # one HTTP client per batch, closed with its event loop
            try:
                async with asyncio.TaskGroup() as group:
                    tasks = [group.create_task(one(job)) for job in jobs]
            except BaseExceptionGroup as group_error:  # a configuration error ends the batch
                first = group_error.exceptions[0]
                raise next(
                    (e for e in group_error.exceptions if isinstance(e, BackendError)), first
                ) from None
        return [t.result() for t in tasks]

    async def _ask(self, agent: Agent[None, Any], parts: list[Any]) -> Any:
        """One image's request with retries; the validated output or ``Failed``."""
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
                result = await agent.run(parts, usage=run_usage)
            except (ModelAuthenticationError, ModelNotFoundError, ModelQuotaExceededError) as exc:
                self._account(run_usage, failed_request=True)
                raise BackendError(self._refused(exc)) from None
            except transient as exc:
                self._account(run_usage, failed_request=True)
                last = exc
                continue
            except (UnexpectedModelBehavior, ModelAPIError) as exc:  # no valid reply; a 400
                self._account(run_usage, failed_request=isinstance(exc, ModelAPIError))
                return Failed(_one_line(exc))
            self._account(run_usage, failed_request=False)
            return result.output
        if isinstance(last, ModelConnectionError) and last.phase == "connect":
            raise BackendError(self._unreachable(last))
        return Failed(f"{_one_line(last)} (after {self.options.max_retries} retries)")

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
                f"{e.base_url} refused llm model {e.label}{code}: the account's quota or "
                "credits are used up; top them up or choose another model"
            )
        if isinstance(exc, ModelNotFoundError):
            pull = f" or pull it (ollama pull {e.model})" if e.provider == "ollama" else ""
            return (
                f"llm model {e.model!r} was not found at {e.base_url}{code}: check the model "
                f"name{pull} and the base_url"
            )
        fix = (
            f"check the key in {e.key_env}"
            if e.key_env
            else "set the api_key_env option to the variable that holds its key"
        )
        return f"{e.base_url} refused the request for llm model {e.label}{code}: {fix}"

    def _unreachable(self, exc: Exception) -> str:
        e = self.endpoint
        start = " (start it with: ollama serve)" if e.provider == "ollama" else ""
        return (
            f"cannot reach {e.base_url} for llm model {e.label}: {_one_line(exc)}; is the server "
            f"running{start}? Set the base_url option if it listens elsewhere"
        )


def _one_line(exc: BaseException | None) -> str:
    text = " ".join(str(exc).split()) if exc is not None else "no reply"
    return (text[:300] + "…") if len(text) > 300 else text


def _reason(out: object) -> str:
    return out.reason if isinstance(out, Failed) else f"unexpected reply {type(out).__name__}"


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


def _connect(
    endpoint: Endpoint, key: str, options: LLMOptions
) -> tuple[OpenAIProvider, OpenAIChatModel]:
    """The pydantic-ai provider and model; no request is made. The SDK's own retries are off
    because ``_ask`` retries with its own backoff and counts every attempt."""
    try:
        from pydantic_ai.models.openai import OpenAIChatModel
        from pydantic_ai.providers.openai import OpenAIProvider
        from pydantic_ai.settings import ModelSettings
    except ImportError:
        raise BackendError(EXTRA_MESSAGE) from None
    settings = ModelSettings(timeout=options.timeout, max_retries=0)
    if options.temperature is not None:
        settings["temperature"] = options.temperature
    provider = OpenAIProvider(base_url=endpoint.base_url, api_key=key)
    return provider, OpenAIChatModel(endpoint.model, provider=provider, settings=settings)


def _make_agent(
    role: Role,
    classes: Sequence[ClassQuery],
    model: OpenAIChatModel,
    *,
    mode: OutputMode,
    output_retries: int,
) -> Agent[None, Any]:
    """The pydantic-ai agent for one role: its reply type in the configured output mode."""
    from pydantic_ai import Agent, ModelRetry, NativeOutput, PromptedOutput, TextOutput, ToolOutput

    if role == "detect":

        def read_boxes(text: str) -> boxparse.Extracted:
            extracted = boxparse.extract_boxes(text)
            if not extracted.found_json:
                raise ModelRetry(
                    'reply with a JSON list only, e.g. [{"bbox_2d": [x0, y0, x1, y1], '
                    '"label": "<class name>", "confidence": 0.9}], or [] if there is none'
                )
            return extracted

        output: Any = TextOutput(read_boxes)
    else:
        reply: type[BaseModel] = llm_schema.JudgeReply
        if role == "classify":
            reply = llm_schema.classification_model(classes)
        elif role == "verify":
            reply = llm_schema.verification_model(classes)
        wrap = {"tool": ToolOutput, "native": NativeOutput, "prompted": PromptedOutput}
        output = wrap[mode](reply)
    return Agent(
        model,
        output_type=output,
        instructions=llm_schema.SYSTEM_PROMPT,
        retries={"output": output_retries},
    )


@BACKENDS.register("llm")
def llm_backend(config: BackendConfig) -> LLMBackend:
    """Multimodal LLM on an OpenAI-compatible server: classify, verify, detect, judge.

    The registered factory; the registry types it as returning a ``Backend``, so call
    ``LLMBackend.from_config`` where the concrete type matters.
    """
    return LLMBackend.from_config(config)


def check(environ: Mapping[str, str] | None = None) -> list[dict[str, str | bool]]:
    """Can the llm labeler run here? One row per provider: does the llm extra import, and is
    the hosted provider's key set. Local servers are not contacted: nothing reaches the
    network, so their readiness is only that of the libraries."""
    env = os.environ if environ is None else environ
    missing = [m for m in ("pydantic_ai", "openai") if importlib.util.find_spec(m) is None]
    rows: list[dict[str, str | bool]] = []
    for provider, info in PROVIDERS.items():
        if missing:
            detail = f"{', '.join(missing)} not installed: {EXTRA_MESSAGE}"
        elif info.key_env and not env.get(info.key_env, "").strip():
            detail = f"set {info.key_env}"
        elif info.hosted:
            detail = "ready"
        else:
            detail = f"ready if a server listens at {info.base_url} (or set the base_url option)"
        rows.append(
            {
                "backend": "llm",
                "model": f"{provider}:MODEL",
                "libraries": not missing,
                "ready": detail.startswith("ready"),
                "detail": detail,
            }
        )
    return rows
