"""Records that cross boundaries: samples, annotations, provenance and quality reports.

Records are immutable; derive a changed one with ``model_copy(update=...)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from datasetagent.spec import SplitName


class _Record(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


Confidence = Annotated[float, Field(ge=0.0, le=1.0)]
ParamValue = str | int | float | bool | None


class ProcessingStep(_Record):
    """One thing the Image Processing agent did to an image, with its parameters."""

    name: str
    params: dict[str, ParamValue] = {}


class Provenance(_Record):
    """Where a sample came from and everything done to it since."""

    source_kind: str
    #: Original file path, or the URL actually fetched (after redirects).
    location: str
    #: Normalised (``licences.normalise``): ``CC-BY-SA-4.0``, ``CC0-1.0``, ``PDM``, ``unknown``,
    #: or ``user-supplied`` for the user's own files.
    licence: str
    creator: str | None = None
    #: The page the image is shown on (a web source's landing page), where there is one.
    page: str | None = None
    licence_url: str | None = None
    title: str | None = None
    #: The label the source itself gave, such as the class folder the file was in.
    source_label: str | None = None
    steps: tuple[ProcessingStep, ...] = ()

    def with_step(self, name: str, **params: ParamValue) -> Provenance:
        return self.model_copy(
            update={"steps": (*self.steps, ProcessingStep(name=name, params=params))}
        )


#: The labeler name of every annotation an existing dataset brought with it.
EXISTING_LABELER = "existing"


class _Annotation(_Record):
    label: str
    confidence: Confidence = 1.0
    #: The labeler that produced it, e.g. ``seed``, ``folder-name``, ``existing``, ``human``.
    labeler: str


class ClassLabel(_Annotation):
    """The class of a whole image."""

    kind: Literal["class"] = "class"


class Box(_Annotation):
    """An axis-aligned box in pixels, top-left corner plus width and height."""

    kind: Literal["box"] = "box"
    x: Annotated[float, Field(ge=0)]
    y: Annotated[float, Field(ge=0)]
    w: Annotated[float, Field(gt=0)]
    h: Annotated[float, Field(gt=0)]


class RLE(_Record):
    """COCO run-length encoding: ``size`` is (height, width), ``counts`` the compressed string."""

    size: tuple[int, int]
    counts: str


class Mask(_Annotation):
    """An instance mask stored as COCO RLE."""

    kind: Literal["mask"] = "mask"
    rle: RLE


Annotation = Annotated[ClassLabel | Box | Mask, Field(discriminator="kind")]


def main_label(annotations: Iterable[ClassLabel | Box | Mask]) -> str | None:
    """The class label among ``annotations``; for boxes and masks the most frequent class
    (first seen on ties); None when there are none."""
    counts: dict[str, int] = {}
    for ann in annotations:
        if isinstance(ann, ClassLabel):
            return ann.label
        counts[ann.label] = counts.get(ann.label, 0) + 1
    return max(counts, key=lambda k: counts[k]) if counts else None


class SourceFile(_Record):
    """The file a sample was decoded from, as read: what ranks copies of one picture."""

    width: int
    height: int
    #: The image format its bytes hold (``JPEG``, ``PNG`` ...).
    format: str
    bytes: int

    def __str__(self) -> str:
        return f"{self.width}x{self.height} {self.format}"


SampleStatus = Literal["processed", "labelled", "review", "rejected"]
SampleOrigin = Literal["existing", "collected"]


class Sample(_Record):
    """One image of the run, identified by the hash of its stored pixels."""

    id: str
    #: Path of the processed image inside the run's blob store, relative to the run folder.
    blob: str
    width: int
    height: int
    mode: str
    origin: SampleOrigin
    provenance: Provenance
    annotations: tuple[Annotation, ...] = ()
    status: SampleStatus = "processed"
    #: Why the sample needs a human look (low confidence, labelers disagree ...).
    review_reasons: tuple[str, ...] = ()
    split: SplitName | None = None
    round: int = 0
    #: Issues the scan reported that do not reject (e.g. ``blurry``).
    flags: tuple[str, ...] = ()
    #: Quality scores of the stored image (see tools/quality.py).
    scores: dict[str, float] = {}
    #: Perceptual hashes (full frame first) for near-duplicate search.
    hashes: tuple[int, ...] = ()
    #: Small grey thumbnail (base64) that confirms near-duplicate hash matches.
    thumb: str = ""
    #: SSIM between the decoded input and the stored image when enhancement changed it
    #: (None when no change was kept).
    ssim: float | None = None
    #: The source file (None in runs stored before it was recorded).
    source: SourceFile | None = None

    @property
    def label(self) -> str | None:
        """The class of a classification sample; for boxes and masks the most frequent class
        (first seen on ties), which files the image under one class for balancing."""
        return main_label(self.annotations)

    @property
    def confidence(self) -> float | None:
        """The class label's confidence; for boxes and masks the weakest one's, since one wrong
        object makes the image's annotation wrong."""
        for ann in self.annotations:
            if isinstance(ann, ClassLabel):
                return ann.confidence
        return min((a.confidence for a in self.annotations), default=None)


class Rejection(_Record):
    """A candidate that did not become a sample, and why."""

    location: str
    source_kind: str
    reasons: tuple[str, ...]
    detail: str = ""
    duplicate_of: str | None = None


class Audit(_Record):
    """One independent check of one label.

    ``calibrate``: a checker shown an existing (trusted) image with its true label or a wrong
    one, to measure how often it agrees with right and with wrong labels; ``verify``: a new
    label checked before it is accepted; ``audit``: an accepted label checked by a human or
    ground truth, which measures the dataset's label reliability directly.
    """

    sample_id: str
    checker: str
    kind: Literal["calibrate", "verify", "audit"]
    label: str
    agree: bool
    #: calibrate only: whether ``label`` is the image's true label.
    correct: bool | None = None
    suggested: str | None = None
    confidence: float = 0.0
    round: int = 0


class ClassFill(_Record):
    name: str
    target: int
    accepted: int
    review: int = 0


class QualityReport(_Record):
    """What the Supervision agent measured after one round, and what it decided."""

    round: int
    classes: tuple[ClassFill, ...]
    #: Class Balance Index over the samples that will be exported (0 = perfectly balanced).
    cbi: float
    rejected_by_reason: dict[str, int] = {}
    candidates_seen: int = 0
    candidates_left: int = 0
    review: int = 0
    #: ALR with its audit size and 95% Wilson interval, once an audit has been made.
    alr: float | None = None
    alr_interval: tuple[float, float] | None = None
    alr_audited: int = 0
    #: How ALR was measured (which checker, calibration, audit), in words.
    alr_method: str = ""
    #: New labels a checker disputed (held back), over the run.
    disputed: int = 0
    #: New labels checkers rejected together while all naming the same other class, which
    #: then replaced the label (``agents/verification.py``), over the run.
    relabelled: int = 0
    #: Confidence of the new exported labels: count per bin (``"0.90-0.95"`` ...).
    confidence: dict[str, int] = {}
    #: Detection and segmentation: objects per class, mean objects per image, and objects by
    #: COCO size (small < 32², medium < 96², large), over the exported images.
    instances: dict[str, int] = {}
    boxes_per_image: float | None = None
    box_sizes: dict[str, int] = {}
    #: SSIM of exported images to their decoded input (1.0 where nothing was changed).
    ssim_mean: float | None = None
    ssim_p5: float | None = None
    #: Exported images whose pixels the enhancement tools changed.
    enhanced: int = 0
    verdict: Literal["continue", "done"]
    #: Why the loop stops or goes on, in words a user reads.
    reason: str

    @property
    def targets_met(self) -> bool:
        return all(c.accepted >= c.target for c in self.classes)
