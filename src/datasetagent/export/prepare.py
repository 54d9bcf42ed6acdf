"""What every exporter is given: a sample whose annotations all fit its image.

Boxes are clipped to the image and snapped (``tools.boxes``); boxes of one class that clipping
makes identical are merged into one (the surer kept); a box with nothing left, a mask of
another size than its image, an empty mask and an object of a class the spec does not list are
dropped with a reason, which the manifest
(per sample) and the data card (counts) record. Exporters never see them.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Collection
from dataclasses import dataclass, field

from datasetagent.records import Annotation, Box, Mask, Sample
from datasetagent.tools.boxes import check_box


@dataclass(frozen=True)
class Dropped:
    """An annotation left out of the export, and why."""

    label: str
    kind: str
    reason: str
    detail: str

    def as_json(self) -> dict[str, str]:
        return {
            "label": self.label,
            "kind": self.kind,
            "reason": self.reason,
            "detail": self.detail,
        }


@dataclass
class ExportStats:
    """Counts gathered while samples stream through an export, for the data card."""

    objects: Counter[tuple[str, str]] = field(default_factory=Counter)  # (split, label)
    dropped: Counter[str] = field(default_factory=Counter)  # reason
    clipped: int = 0
    #: Things a format could not hold exactly (e.g. mask holes in polygons), with counts.
    notes: Counter[str] = field(default_factory=Counter)


def _check_mask(ann: Mask, sample: Sample) -> str | None:
    from datasetagent.tools.masks import rle_area  # pycocotools, loaded when used

    if tuple(ann.rle.size) != (sample.height, sample.width):
        return "mask_size"
    if rle_area(ann.rle) == 0:
        return "empty_mask"
    return None


def prepare(
    sample: Sample, stats: ExportStats, classes: Collection[str]
) -> tuple[Sample, list[Dropped]]:
    """``sample`` with every box clipped and snapped, and the annotations that cannot be
    exported removed (returned with their reasons); ``stats`` is updated."""
    kept: list[Annotation] = []
    dropped: list[Dropped] = []
    boxes: dict[tuple[str, float, float, float, float], int] = {}  # clipped box -> index in kept
    for ann in sample.annotations:
        if isinstance(ann, Box | Mask) and ann.label not in classes:
            dropped.append(Dropped(ann.label, ann.kind, "unknown_class", "not a class of the spec"))
            continue
        if isinstance(ann, Box):
            box = (ann.x, ann.y, ann.w, ann.h)
            check = check_box(box, sample.width, sample.height)
            if check.box is None:
                dropped.append(Dropped(ann.label, "box", check.reason or "", f"xywh {box}"))
                continue
            x, y, w, h = check.box
            stats.clipped += check.clipped
            if (x, y, w, h) != box:
                ann = ann.model_copy(update={"x": x, "y": y, "w": w, "h": h})
            same = boxes.get((ann.label, x, y, w, h))
            if same is not None:  # two boxes that clipping made one: keep the surer
                why = f"xywh {box}: the same {ann.label} box as another once clipped"
                if ann.confidence > kept[same].confidence:
                    kept[same], ann = ann, kept[same]
                dropped.append(Dropped(ann.label, "box", "duplicate_after_clipping", why))
                continue
            boxes[(ann.label, x, y, w, h)] = len(kept)
        elif isinstance(ann, Mask):
            reason = _check_mask(ann, sample)
            if reason is not None:
                size = f"mask {ann.rle.size[0]}x{ann.rle.size[1]} (height x width)"
                dropped.append(Dropped(ann.label, "mask", reason, size))
                continue
        kept.append(ann)
        if isinstance(ann, Box | Mask):
            stats.objects[(sample.split or "", ann.label)] += 1
    stats.dropped.update(d.reason for d in dropped)
    if len(kept) != len(sample.annotations) or any(
        a is not b for a, b in zip(kept, sample.annotations, strict=False)
    ):
        sample = sample.model_copy(update={"annotations": tuple(kept)})
    return sample, dropped
