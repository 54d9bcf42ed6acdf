"""Image Processing agent: decode, check, normalise, deduplicate and store candidates."""

from __future__ import annotations

import io
import itertools
import logging
from collections import Counter
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Protocol, TypeVar

import numpy as np
from PIL import Image, ImageOps, JpegImagePlugin

from datasetagent.models import Usage
from datasetagent.records import ProcessingStep, Provenance, Rejection, Sample, SourceFile
from datasetagent.runtime.local import Executor
from datasetagent.sources import Source
from datasetagent.spec import DatasetSpec, ImageConstraints
from datasetagent.store import BlobStore, Candidate, RunStore
from datasetagent.tools import quality
from datasetagent.tools.decode import ImageIssue, decode_strict
from datasetagent.tools.dedupe import (
    Deduplicator,
    Duplicate,
    Quality,
    Thumb,
    decode_thumb,
    encode_thumb,
    thumbnail,
)
from datasetagent.tools.enhance import (
    POLICY_SIDE,
    RulePolicy,
    enhance,
    letterbox,
    policy_scores,
    resize_to,
)
from datasetagent.tools.hashing import pixel_hash
from datasetagent.tools.phash import image_hashes

if TYPE_CHECKING:
    from datasetagent.agents.processing_llm import ToolDecision

log = logging.getLogger(__name__)
T = TypeVar("T")

#: Source formats whose bytes are kept as they are when processing changed no pixel.
_KEEP_AS_IS = {"JPEG": "jpg", "PNG": "png"}
#: JPEG quality of a changed JPEG (or MPO) source; its chroma subsampling is kept.
JPEG_QUALITY = 95
#: Results deduplicated together: one near-duplicate query a batch, not one a result.
DEDUP_BATCH = 256


@dataclass(frozen=True)
class ProcessParams:
    """Everything the per-image work needs; small and picklable for worker processes.

    ``policy`` is an MLLM tool policy (``agents.processing_llm.LLMToolPolicy``) that chooses
    the Tool Package tools for each image and may judge it unusable; without one the rule
    policy chooses. It pickles without its connection and reconnects in the worker."""

    constraints: ImageConstraints
    policy: ToolPolicy | None = None


class ToolPolicy(Protocol):
    def decide(self, scores: dict[str, float], mode: str, image: Image.Image) -> ToolDecision: ...


@dataclass
class Processed:
    """The outcome for one candidate: stored bytes and metadata, or the issues found."""

    issues: list[str] = field(default_factory=list)
    detail: str = ""
    digest: str = ""
    ext: str = ""
    data: bytes = b""
    width: int = 0
    height: int = 0
    mode: str = ""
    steps: list[ProcessingStep] = field(default_factory=list)
    scores: dict[str, float] = field(default_factory=dict)
    #: Model calls and tokens this image cost (the tool policy's), for the run's usage.
    usage: dict[str, int] = field(default_factory=dict)
    flags: list[str] = field(default_factory=list)
    hashes: tuple[int, ...] = ()
    thumb: str = ""
    ssim: float | None = None
    source: SourceFile | None = None


def process_bytes(data: bytes, params: ProcessParams) -> Processed:
    """Pure per-image work: strict decode, checks, normalisation, hashing and encoding."""
    c = params.constraints
    try:
        decoded = decode_strict(data, max_pixels=c.max_pixels, color_mode=c.color_mode)
    except ImageIssue as issue:
        return Processed(issues=[issue.issue], detail=issue.detail)
    img = decoded.image
    # the decoder's own array, or one copy out of Pillow, serves every measurement below
    pixels = decoded.pixels if decoded.pixels is not None else np.asarray(img)
    small = (
        img
        if max(img.size) <= quality.ANALYSIS_SIDE
        else Image.fromarray(quality.analysis_array(pixels), mode=img.mode)
    )
    scores = quality.score(small)
    issues = quality.mark(img.width, img.height, scores, c.checks, min_side=c.min_side)
    if c.checks.rejects(issues):
        detail = ", ".join(f"{k} {v:.3g}" for k, v in scores.items())
        return Processed(
            issues=issues,
            detail=f"{img.width}x{img.height}; {detail}",
            width=img.width,
            height=img.height,
            scores=scores,
        )
    gray = quality.gray_of(small)
    hashes = tuple(int(h) for h in image_hashes(gray))
    steps = list(decoded.steps)
    #: whether the pixels differ from what the source file decodes to (then it is re-encoded);
    #: of an animated file only the first frame was checked, so only it is stored
    changed = bool(decoded.steps) or decoded.frames > 1
    ssim_value = None
    usage: dict[str, int] = {}
    if c.enhance == "auto" or params.policy is not None:
        look = quality.analysis_array(pixels, POLICY_SIDE)
        scores_at_policy_side = policy_scores(look)
        if params.policy is not None:
            image = Image.fromarray(look, mode=img.mode)
            decision = params.policy.decide(scores_at_policy_side, img.mode, image=image)
            usage = decision.usage.as_dict()
            steps.append(decision.step())
            if not decision.usable:
                return Processed(
                    issues=["unusable"],
                    detail=f"the tool policy judged it unusable: {decision.reason}",
                    usage=usage,
                )
            calls = list(decision.calls) if c.enhance == "auto" else []
        else:
            calls = RulePolicy().choose(scores_at_policy_side, img.mode)
        if calls:
            enhanced = enhance(pixels, calls, ssim_floor=c.ssim_floor)
            steps.extend(enhanced.steps)  # an undone change is recorded, with its SSIM
            if not enhanced.undone:
                ssim_value = enhanced.ssim
                img = Image.fromarray(enhanced.image, mode=img.mode)
                changed = True
    if c.size is not None and img.size != tuple(c.size):
        img, step = fit_to(img, c.size, c.resize)
        steps.append(step)
        changed = True
    out, ext = stored_bytes(data, decoded.source_format, img, changed=changed)
    return Processed(
        digest=pixel_hash(img),
        ext=ext,
        data=out,
        width=img.width,
        height=img.height,
        mode=img.mode,
        steps=steps,
        scores=scores,
        flags=issues,
        hashes=hashes,
        thumb=encode_thumb(Thumb(thumbnail(gray), min(decoded.image.size))),
        ssim=ssim_value,
        usage=usage,
        source=SourceFile(
            width=decoded.width,
            height=decoded.height,
            format=decoded.source_format,
            bytes=len(data),
        ),
    )


def stored_bytes(
    data: bytes, source_format: str, img: Image.Image, *, changed: bool
) -> tuple[bytes, str]:
    """What a sample's blob holds, and its extension: the source file's own bytes when no pixel
    changed and it is a JPEG or PNG; otherwise ``img`` encoded in the source's kind of format —
    a JPEG (or MPO) source as a JPEG at quality ``JPEG_QUALITY`` with its chroma subsampling, a
    PNG source as a PNG, and the rest (BMP, GIF, TIFF, WebP, PPM) as PNG — with the source's
    colour profile where its colour space is the image's, so viewers show the same colours."""
    keep = _KEEP_AS_IS.get(source_format)
    if not changed and keep is not None:
        return data, keep
    buf = io.BytesIO()
    with Image.open(io.BytesIO(data)) as src:  # reads the header only
        options = _source_options(src, source_format, img.mode)
    if source_format in ("JPEG", "MPO"):
        img.save(buf, format="JPEG", quality=JPEG_QUALITY, **options)
        return buf.getvalue(), "jpg"
    img.save(buf, format="PNG", optimize=False, **options)
    return buf.getvalue(), "png"


#: Source modes whose colour profile describes RGB, and grey, pixels.
_RGB_SOURCES = frozenset({"RGB", "RGBA", "RGBX", "P", "PA", "YCbCr"})
_GREY_SOURCES = frozenset({"L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "F"})


def _source_options(src: Image.Image, source_format: str, mode: str) -> dict[str, object]:
    """Pillow save arguments that keep what the source says of its pixels: a JPEG's chroma
    subsampling (RGB output, a layout Pillow can write) and the ICC colour profile, where the
    source's colour space is the output's (none otherwise: not a CMYK or RGB profile on grey)."""
    options: dict[str, object] = {}
    if source_format in ("JPEG", "MPO") and mode == "RGB":
        sampling = JpegImagePlugin.get_sampling(src)
        if sampling in (0, 1, 2):
            options["subsampling"] = sampling
    icc = src.info.get("icc_profile")
    family = _RGB_SOURCES if mode == "RGB" else _GREY_SOURCES
    # None, not left out: Pillow's PNG writer would take the decoded image's own profile
    options["icc_profile"] = icc if isinstance(icc, bytes) and icc and src.mode in family else None
    return options


def fit_to(img: Image.Image, size: tuple[int, int], how: str) -> tuple[Image.Image, ProcessingStep]:
    """Fit ``img`` to ``size`` by centre crop, letterbox or stretch; returns the step too."""
    before = f"{img.width}x{img.height}"
    if how == "crop":
        out = ImageOps.fit(img, size, Image.Resampling.LANCZOS)
    elif how == "letterbox":
        out = Image.fromarray(letterbox(np.asarray(img), size), mode=img.mode)
    else:
        out = Image.fromarray(resize_to(np.asarray(img), size), mode=img.mode)
    step = ProcessingStep(name=f"fit_{how}", params={"from": before, "to": f"{size[0]}x{size[1]}"})
    return out, step


@dataclass(frozen=True)
class _Job:
    """Picklable unit of work: read one candidate from its source and process it."""

    source: Source
    params: ProcessParams

    def __call__(self, cand: Candidate) -> Processed:
        try:
            data = self.source.read(cand.location)
        except OSError as exc:
            return Processed(issues=["corrupt"], detail=f"cannot read: {exc.strerror or exc}")
        return process_bytes(data, self.params)


class ImageProcessingAgent:
    """Turns a round's candidates into stored samples or reported rejections.

    Of a duplicate group it keeps the best copy (``tools.dedupe.Quality``): a better copy
    arriving after a worse one was stored, in that round or a later one, takes its place and
    is labelled anew; the worse one becomes its near duplicate. The existing dataset being
    expanded is never replaced (a better pool copy of one of its images is the duplicate)."""

    def __init__(
        self,
        store: RunStore,
        blobs: BlobStore,
        spec: DatasetSpec,
        executor: Executor,
        sources: dict[str, Source],
        policy: ToolPolicy | None = None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.licences = spec.licences
        self.params = ProcessParams(spec.image, policy)
        #: What the tool policy's model calls cost in this process.
        self.usage = Usage()
        self.dedupe = Deduplicator(spec.image.checks.near_duplicate_bits)
        # what the index held when the last sample was stored: every stored sample, in the
        # order it was kept, but the near copies inside the existing dataset (only flagged)
        kept = [s for s in store.samples() if "near_duplicate" not in s.flags]
        self.dedupe.add(
            [s.id for s in kept],
            [np.array(s.hashes, dtype=np.uint64) for s in kept],
            [decode_thumb(s.thumb) if s.thumb else None for s in kept],
        )
        self.executor = executor
        self.sources = sources
        self._fetched: dict[int, str] = {}

    def run_round(
        self,
        round_: int,
        progress: Callable[[int], None] | None = None,
        after_batch: Callable[[], object] | None = None,
    ) -> Counter[str]:
        """Process every candidate of ``round_`` not processed yet; returns outcome counts:
        ``kept`` and the rejection reasons of this round's candidates, and ``replaced``, the
        samples stored before (in earlier rounds) that a better copy replaced, now its near
        duplicates.
        ``after_batch`` runs after each batch is stored (the pipeline saves model usage)."""
        outcomes: Counter[str] = Counter()
        #: web candidates' URLs as fetched (after redirects): the provenance records those
        self._fetched = {k: url for k, (url, _) in self.store.downloads(round_).items()}
        #: what became of each candidate of this call, by id (a replacement changes it later)
        decided: dict[int, tuple[str, ...]] = {}
        replaced = 0
        todo = self.store.candidates_to_process(round_)
        by_source: dict[str, list[Candidate]] = {}
        for cand in todo:
            # refused before it is even read; the existing dataset being expanded is the
            # user's own and is kept whatever its licences (the data card lists them)
            why = None if cand.origin == "existing" else self.licences.refusal(cand.licence)
            if why is not None:
                refused = Rejection(
                    location=cand.location,
                    source_kind=cand.source_kind,
                    reasons=("licence",),
                    detail=f"{why}; licence policy: {self.licences.describe()}",
                )
                self.store.record_outcome(cand.id, round_, refused)
                outcomes["licence"] += 1
                continue
            by_source.setdefault(cand.source_kind, []).append(cand)
        for kind, cands in by_source.items():
            job = _Job(self.sources[kind], self.params)
            results = zip(cands, _counted(self.executor.map(job, cands), progress), strict=True)
            while batch := list(itertools.islice(results, DEDUP_BATCH)):
                for _, result in batch:
                    if result.usage:
                        self.usage.add(Usage(**result.usage))
                while batch:
                    near, replaces = self._near_duplicates(batch)
                    replaced += self._store(batch[: len(near)], near, replaces, round_, decided)
                    batch = batch[len(near) :]
                if after_batch is not None:
                    after_batch()
        for reasons in decided.values():
            outcomes.update(reasons)
        if replaced:
            outcomes["replaced"] = replaced
        return outcomes

    def _store(
        self,
        items: list[tuple[Candidate, Processed]],
        near: list[Duplicate | None],
        replaces: bool,
        round_: int,
        decided: dict[int, tuple[str, ...]],
    ) -> int:
        """Store each result, or its rejection, given its near-duplicate verdict; with
        ``replaces`` the last is kept in place of the sample its verdict names. Notes what
        became of each candidate in ``decided`` (and of those a replacement changed); returns
        how many samples stored before this round's call were replaced."""
        replaced = 0
        for n, ((cand, result), dup) in enumerate(zip(items, near, strict=True)):
            if replaces and n == len(items) - 1 and dup is not None:
                for k, (changed, rejection) in enumerate(self._replace(cand, result, dup, round_)):
                    if changed in decided:
                        decided[changed] = rejection.reasons
                    elif k == 0:  # the replaced copy
                        replaced += 1
                decided[cand.id] = ("kept",)
                continue
            outcome = self.store.record_outcome(cand.id, round_, self._record(cand, result, dup))
            decided[cand.id] = outcome.reasons if isinstance(outcome, Rejection) else ("kept",)
        return replaced

    def _near_duplicates(
        self, batch: list[tuple[Candidate, Processed]]
    ) -> tuple[list[Duplicate | None], bool]:
        """The near-duplicate verdicts of the batch's first results, as checking one at a time
        would give them, from one index query for them all (one a result costs ~1 ms each),
        and whether the last of them is a better copy of the kept sample its verdict names.

        The verdicts stop after the first such better copy: it takes that sample's place in
        the index, and the results after it are checked against the index as it is then.
        Results with issues, and exact copies (pixels already stored, or met earlier in the
        batch: decided when recorded) take no part. A copy of an earlier result of the batch
        gets that result's verdict, which is what checking one at a time would give it.
        """
        results = [result for _, result in batch]
        first: dict[str, int] = {}
        for i, result in enumerate(results):
            if result.issues or result.digest in first:
                continue
            if self.store.find_sample(result.digest) is None:
                first[result.digest] = i
        todo = list(first.values())
        found = self.dedupe.check(*self._dedupe_items(results, todo), remember=False)
        verdict = dict(zip(todo, found, strict=True))
        better = next(
            (
                n
                for n, (i, dup) in enumerate(zip(todo, found, strict=True))
                if dup is not None and self._better_copy(batch, i, dup)
            ),
            None,
        )
        end = len(results) if better is None else todo[better] + 1
        todo = todo if better is None else todo[:better]
        self.dedupe.keep(*self._dedupe_items(results, todo), [verdict[i] for i in todo])
        if better is not None:
            best, replaced = results[end - 1], found[better]
            assert replaced is not None  # a better copy has a verdict to name what it replaces
            self.dedupe.replace(
                replaced.of,
                best.digest,
                np.array(best.hashes, dtype=np.uint64),
                decode_thumb(best.thumb) if best.thumb else None,
            )
        out = [
            verdict[first[result.digest]] if not result.issues and result.digest in first else None
            for result in results[:end]
        ]
        return out, better is not None

    @staticmethod
    def _dedupe_items(
        results: list[Processed], todo: list[int]
    ) -> tuple[list[str], list[str | None], list[np.ndarray | None], list[Thumb | None]]:
        """``Deduplicator.check``'s arguments for these results."""
        return (
            [results[i].digest for i in todo],
            [None] * len(todo),
            [np.array(results[i].hashes, dtype=np.uint64) for i in todo],
            [decode_thumb(results[i].thumb) if results[i].thumb else None for i in todo],
        )

    def _better_copy(
        self, batch: list[tuple[Candidate, Processed]], i: int, dup: Duplicate
    ) -> bool:
        """Whether result ``i`` is to be kept in place of ``dup.of``, a kept sample (stored, or
        an earlier result of the batch): a better copy (``Quality``), both of them collected.
        The user's own dataset is never replaced, and never replaces."""
        cand, result = batch[i]
        if cand.origin != "collected" or result.source is None:
            return False
        earlier = [(c, r) for c, r in batch[:i] if not r.issues and r.digest == dup.of]
        if earlier:
            origin, source = earlier[0][0].origin, earlier[0][1].source
        else:
            kept = self.store.find_sample(dup.of)
            if kept is None:
                return False
            origin, source = kept.origin, kept.source
        if origin != "collected" or source is None:
            return False  # a sample stored before sources were recorded is not ranked
        return _quality(result.source).better_than(_quality(source))

    def _replace(
        self, cand: Candidate, result: Processed, dup: Duplicate, round_: int
    ) -> list[tuple[int, Rejection]]:
        """Store ``result`` in place of the sample ``dup.of``, a worse copy of it, which
        becomes a near duplicate of it (one store transaction); returns the candidates whose
        outcome changed (``RunStore.replace_sample``)."""
        old = self.store.find_sample(dup.of)
        sample = self._record(cand, result, None)
        assert old is not None  # as _near_duplicates decided
        assert isinstance(sample, Sample)
        rejection = Rejection(
            location=old.provenance.location,
            source_kind=old.provenance.source_kind,
            reasons=("near_duplicate",),
            duplicate_of=cand.location,
            detail=f"{dup.distance} bits from {cand.location}, a better copy "
            f"({sample.source} over {old.source})",
        )
        changed = self.store.replace_sample(old.id, cand.id, round_, sample, rejection)
        self.blobs.path(old.blob).unlink(missing_ok=True)  # its image went with it
        return changed

    def _record(
        self, cand: Candidate, result: Processed, near: Duplicate | None
    ) -> Sample | Rejection:
        if result.issues:
            return Rejection(
                location=cand.location,
                source_kind=cand.source_kind,
                reasons=tuple(result.issues),
                detail=result.detail,
            )
        flags = tuple(result.flags)
        existing = self.store.find_sample(result.digest)
        if existing is None:
            if near is not None and cand.origin == "existing":
                # the dataset being expanded is the user's: a near copy inside it is flagged
                # (the splits keep such groups together), never dropped
                flags += ("near_duplicate",)
            elif near is not None:
                first = self.store.find_sample(near.of)
                where = first.provenance.location if first is not None else near.of
                return Rejection(
                    location=cand.location,
                    source_kind=cand.source_kind,
                    reasons=("near_duplicate",),
                    duplicate_of=where,
                    detail=f"{near.distance} bits from {where}",
                )
            blob = self.blobs.put(result.digest, result.ext, result.data)
        else:  # exact duplicate: store.record_outcome turns it into a rejection
            blob = existing.blob
        provenance = Provenance(
            source_kind=cand.source_kind,
            location=self._fetched.get(cand.id, cand.location),
            licence=cand.licence,
            creator=cand.creator,
            source_label=cand.class_hint,
            steps=tuple(result.steps),
            **(
                {}
                if cand.web is None
                else {
                    "page": cand.web.page,
                    "licence_url": cand.web.licence_url,
                    "title": cand.web.title,
                }
            ),
        )
        return Sample(
            id=result.digest,
            blob=blob,
            width=result.width,
            height=result.height,
            mode=result.mode,
            origin=cand.origin,
            provenance=provenance,
            split=cand.split_hint,
            round=cand.round or 0,
            flags=flags,
            scores=result.scores,
            hashes=result.hashes,
            thumb=result.thumb,
            ssim=result.ssim,
            source=result.source,
        )


def _quality(source: SourceFile) -> Quality:
    return Quality.of(source.width, source.height, source.format, source.bytes)


def _counted(items: Iterable[T], progress: Callable[[int], None] | None) -> Iterator[T]:
    """``items``, calling ``progress(1)`` as each arrives (a batch is stored only once full)."""
    for item in items:
        if progress is not None:
            progress(1)
        yield item
