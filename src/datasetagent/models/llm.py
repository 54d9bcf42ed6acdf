"""The ``llm`` backend: an MLLM behind any OpenAI-compatible endpoint, in every labelling role.

``LLMBackend`` is an ``ImageClassifier``, ``LabelVerifier``, ``ObjectDetector`` and
``UsabilityJudge``; it is registered as the ``llm`` labeler, built from a ``BackendConfig``
whose ``model`` is a model string (``ollama:qwen2.5vl:7b``, ``openai:gpt-4o-mini``; see
``llm_endpoint``). Requests go through pydantic-ai, which validates structured replies and
asks again with the validation error when a reply does not fit; agent code never sees it. The
connection (keys, retries and backoff, usage, one-line errors) is ``llm_call.LLMClient``,
which LLM planning and the LLM tool policy use as well.
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

import base64
import importlib.util
import io
import logging
import os
import threading
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

from PIL import Image
from pydantic import BaseModel

from datasetagent.errors import ConfigError
from datasetagent.models import (
    BACKENDS,
    NONE_LABEL,
    BackendConfig,
    ClassQuery,
    Detection,
    Prediction,
    Prepared,
    Usability,
    Verdict,
    boxparse,
    llm_schema,
)
from datasetagent.models.llm_call import (
    EXTRA_MESSAGE,
    CallGate,
    Failed,
    LLMClient,
    LLMOptions,
)
from datasetagent.models.llm_endpoint import PROVIDERS, Endpoint, redact_url

if TYPE_CHECKING:
    from pydantic_ai import Agent

__all__ = [
    "EXTRA_MESSAGE", "EncodedImage", "Failed", "LLMBackend", "LLMOptions", "check",
    "encode_image", "llm_backend", "probe_server",
]  # fmt: skip

log = logging.getLogger(__name__)

Role = Literal["classify", "verify", "detect", "judge"]


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
        self._client = LLMClient(endpoint, options, environ=environ)
        self.usage = self._client.usage
        self.endpoint = endpoint
        self.options = options
        #: Indices, in the last batch, of the images whose call failed (see the module docstring).
        self.last_failed: tuple[int, ...] = ()
        #: Boxes dropped from detection replies so far: malformed, degenerate or not a class.
        self.dropped_boxes = 0
        #: The box convention this model's replies proved (``box_coords`` auto), once known.
        self.learned_coords: boxparse.Coords | None = None
        self._classes = tuple(classes)
        self._lock = threading.Lock()
        self._agents: dict[Role, Agent[None, Any]] = {}

    @classmethod
    def from_config(
        cls, config: BackendConfig, *, environ: Mapping[str, str] | None = None
    ) -> LLMBackend:
        """Build from a labeler config: parse the options and model string, read the key from
        ``environ`` (default ``os.environ``). No request is made."""
        options = LLMOptions.parse(config.options)
        return cls(config.classes, options.endpoint(config.model), options, environ=environ)

    @property
    def classes(self) -> tuple[str, ...]:
        return llm_schema.class_names(self._classes)

    def limit(self, gate: CallGate) -> None:
        """Send every request through ``gate`` (the run's budget); a request it refuses ends
        the batch with ``BudgetSpent``."""
        self._client.gate = gate

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
        replies = self._batch("detect", jobs)
        if coords == "auto":
            self._learn_coords(replies, encoded)
        out: list[list[Detection]] = []
        for reply, e in zip(replies, encoded, strict=True):
            if not isinstance(reply, boxparse.Extracted):
                out.append([])
                continue
            fallback = self.learned_coords or "pixel"
            frame = boxparse.ReplyFrame(table, e.sent_size, e.size, coords, fallback=fallback)
            parsed = boxparse.to_detections(reply.boxes, frame)
            dropped = parsed.dropped + reply.malformed
            if dropped:
                log.debug("%s: dropped %d box(es) from a detection reply", self.name, dropped)
            with self._lock:
                self.dropped_boxes += dropped
            out.append(list(parsed.detections))
        return out

    def _learn_coords(self, replies: list[Any], encoded: list[EncodedImage]) -> None:
        """Remember the grid convention (pixels or 0–1000) this model's replies prove, the
        first time a batch proves one and none contradicts it."""
        if self.learned_coords is not None:
            return
        proofs = {
            boxparse.proven_coords(r.boxes, e.sent_size)
            for r, e in zip(replies, encoded, strict=True)
            if isinstance(r, boxparse.Extracted)
        } & {"pixel", "norm1000"}
        if len(proofs) == 1:
            with self._lock:
                (self.learned_coords,) = proofs
            log.info(
                "%s answers boxes in %s (proven by its replies); the option box_coords=%s "
                "fixes that from the first image",
                self.name,
                "pixels" if self.learned_coords == "pixel" else "a 0-1000 grid",
                self.learned_coords,
            )

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
            self._agents[role] = _make_agent(role, self._classes, self._client)
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
            return lambda: self._client.ask(agent, parts)

        with self._lock:
            results = self._client.run([job(p, e) for p, e in jobs])
            self.usage.images += len(jobs)
            self.last_failed = tuple(i for i, r in enumerate(results) if isinstance(r, Failed))
            self.usage.failures += len(self.last_failed)
        for i in self.last_failed:
            log.warning("%s: image %d of the batch failed: %s", self.name, i, results[i].reason)
        return results


def _reason(out: object) -> str:
    return out.reason if isinstance(out, Failed) else f"unexpected reply {type(out).__name__}"


def _make_agent(role: Role, classes: Sequence[ClassQuery], client: LLMClient) -> Agent[None, Any]:
    """The pydantic-ai agent for one role: its reply type in the configured output mode."""
    from pydantic_ai import ModelRetry, TextOutput

    if role == "detect":

        def read_boxes(text: str) -> boxparse.Extracted:
            extracted = boxparse.extract_boxes(text)
            if not extracted.found_json:
                raise ModelRetry(
                    'reply with a JSON list only, e.g. [{"bbox_2d": [x0, y0, x1, y1], '
                    '"label": "<class name>", "confidence": 0.9}], or [] if there is none'
                )
            return extracted

        return client.agent(TextOutput(read_boxes), instructions=llm_schema.SYSTEM_PROMPT)
    reply: type[BaseModel] = llm_schema.JudgeReply
    if role == "classify":
        reply = llm_schema.classification_model(classes)
    elif role == "verify":
        reply = llm_schema.verification_model(classes)
    return client.agent(reply, instructions=llm_schema.SYSTEM_PROMPT)


@BACKENDS.register("llm")
def llm_backend(config: BackendConfig) -> LLMBackend:
    """Multimodal LLM on an OpenAI-compatible server: classify, verify, detect, judge.

    The registered factory; the registry types it as returning a ``Backend``, so call
    ``LLMBackend.from_config`` where the concrete type matters.
    """
    return LLMBackend.from_config(config)


def probe_server(base_url: str, timeout: float = 2.0) -> str | None:
    """Ask an OpenAI-compatible server for its models (``GET BASE_URL/models``): None when it
    answers, else why not in words. The only network call ``models check`` makes."""
    import urllib.error
    import urllib.request

    shown = redact_url(base_url)
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(f"{base_url.rstrip('/')}/models", timeout=timeout) as reply:
            reply.read(2**16)
    except urllib.error.HTTPError as exc:
        if exc.code in (401, 403):
            return f"{shown} answers but refuses the request (HTTP {exc.code}): check its key"
        return (
            f"{shown} answers HTTP {exc.code} to GET /models: is it an OpenAI-compatible "
            "server, and is the URL its /v1 root?"
        )
    except (urllib.error.URLError, OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"no server answers at {shown} ({reason}): start it, or set the base_url option"
    return None


def check(
    environ: Mapping[str, str] | None = None,
    *,
    probe: Callable[[str], str | None] | None = None,
    servers: Mapping[str, str] | None = None,
) -> list[dict[str, str | bool]]:
    """Can the llm labeler run here? One row per provider: does the llm extra import, and is
    the hosted provider's key set (hosted servers are not contacted). A local server (at its
    default URL, or ``servers[provider]``) is asked with ``probe`` (e.g. :func:`probe_server`)
    and is ready only if it answers; without ``probe`` nothing reaches the network and its row
    says "not checked"."""
    env = os.environ if environ is None else environ
    missing = [m for m in ("pydantic_ai", "openai") if importlib.util.find_spec(m) is None]
    rows: list[dict[str, str | bool]] = []
    for provider, info in PROVIDERS.items():
        url = (servers or {}).get(provider, info.base_url)
        ready = False
        if missing:
            detail = f"{', '.join(missing)} not installed: {EXTRA_MESSAGE}"
        elif info.key_env and not env.get(info.key_env, "").strip():
            detail = f"set {info.key_env}"
        elif info.hosted:
            ready, detail = True, f"ready: {info.key_env} is set (the server is not contacted)"
        elif probe is None:
            detail = f"not checked: a server at {redact_url(url)} (or set the base_url option)"
        else:
            problem = probe(url)
            ready = problem is None
            detail = f"ready: {redact_url(url)} answers" if problem is None else problem
        rows.append(
            {
                "backend": "llm",
                "model": f"{provider}:MODEL",
                "libraries": not missing,
                "ready": ready,
                "detail": detail,
            }
        )
    return rows
