"""Image Processing agent: decode, check, normalise, deduplicate and store candidates."""

from __future__ import annotations

import io
import logging
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field

from PIL import Image, ImageOps

from datasetagent.records import ProcessingStep, Provenance, Rejection, Sample
from datasetagent.runtime.local import Executor
from datasetagent.sources import Source
from datasetagent.spec import DatasetSpec, ImageConstraints
from datasetagent.store import BlobStore, Candidate, RunStore
from datasetagent.tools import quality
from datasetagent.tools.decode import ImageIssue, decode_strict
from datasetagent.tools.hashing import pixel_hash

log = logging.getLogger(__name__)

#: Source formats whose bytes are kept as they are when processing changed no pixel.
_KEEP_AS_IS = {"JPEG": "jpg", "PNG": "png"}


@dataclass(frozen=True)
class ProcessParams:
    """Everything the per-image work needs; small and picklable for worker processes."""

    constraints: ImageConstraints
    thresholds: quality.Thresholds

    @classmethod
    def from_constraints(cls, constraints: ImageConstraints) -> ProcessParams:
        return cls(constraints, quality.Thresholds(min_side=constraints.min_side))


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


def process_bytes(data: bytes, params: ProcessParams) -> Processed:
    """Pure per-image work: strict decode, checks, normalisation, hashing and encoding."""
    c = params.constraints
    try:
        decoded = decode_strict(data, max_pixels=c.max_pixels, color_mode=c.color_mode)
    except ImageIssue as issue:
        return Processed(issues=[issue.issue], detail=issue.detail)
    img = decoded.image
    scores = quality.score(img)
    issues = quality.mark(img.width, img.height, scores, params.thresholds)
    if issues:
        detail = f"{img.width}x{img.height}, contrast {scores['contrast']:.2f}"
        return Processed(
            issues=issues, detail=detail, width=img.width, height=img.height, scores=scores
        )
    steps = list(decoded.steps)
    if c.size is not None and img.size != tuple(c.size):
        before = img.size
        img = ImageOps.fit(img, c.size, Image.Resampling.LANCZOS)
        steps.append(
            ProcessingStep(
                name="fit",
                params={"from": f"{before[0]}x{before[1]}", "to": f"{c.size[0]}x{c.size[1]}"},
            )
        )
    ext = _KEEP_AS_IS.get(decoded.source_format)
    if steps or ext is None:
        buf = io.BytesIO()
        img.save(buf, format="PNG", optimize=False)
        out, ext = buf.getvalue(), "png"
    else:
        out = data
    return Processed(
        digest=pixel_hash(img),
        ext=ext,
        data=out,
        width=img.width,
        height=img.height,
        mode=img.mode,
        steps=steps,
        scores=scores,
    )


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
    """Turns a round's candidates into stored samples or reported rejections."""

    def __init__(
        self,
        store: RunStore,
        blobs: BlobStore,
        spec: DatasetSpec,
        executor: Executor,
        sources: dict[str, Source],
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.licences = spec.licences
        self.params = ProcessParams.from_constraints(spec.image)
        self.executor = executor
        self.sources = sources

    def run_round(self, round_: int, progress: Callable[[int], None] | None = None) -> Counter[str]:
        """Process every candidate of ``round_`` not processed yet; returns outcome counts."""
        outcomes: Counter[str] = Counter()
        todo = self.store.candidates_to_process(round_)
        by_source: dict[str, list[Candidate]] = {}
        for cand in todo:
            if not self.licences.allows(cand.licence):  # refused before it is even read
                refused = Rejection(
                    location=cand.location,
                    source_kind=cand.source_kind,
                    reasons=("licence",),
                    detail=f"{cand.licence} is not allowed by the "
                    f"{self.licences.mode} licence policy",
                )
                self.store.record_outcome(cand.id, round_, refused)
                outcomes["licence"] += 1
                continue
            by_source.setdefault(cand.source_kind, []).append(cand)
        for kind, cands in by_source.items():
            job = _Job(self.sources[kind], self.params)
            for cand, result in zip(cands, self.executor.map(job, cands), strict=True):
                outcome = self.store.record_outcome(cand.id, round_, self._record(cand, result))
                if isinstance(outcome, Sample):
                    outcomes["kept"] += 1
                else:
                    outcomes.update(outcome.reasons)
                if progress is not None:
                    progress(1)
        return outcomes

    def _record(self, cand: Candidate, result: Processed) -> Sample | Rejection:
        if result.issues:
            return Rejection(
                location=cand.location,
                source_kind=cand.source_kind,
                reasons=tuple(result.issues),
                detail=result.detail,
            )
        existing = self.store.find_sample(result.digest)
        if existing is None:
            blob = self.blobs.put(result.digest, result.ext, result.data)
        else:  # exact duplicate: store.record_outcome turns it into a rejection
            blob = existing.blob
        provenance = Provenance(
            source_kind=cand.source_kind,
            location=cand.location,
            licence=cand.licence,
            creator=cand.creator,
            source_label=cand.class_hint,
            steps=tuple(result.steps),
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
        )
