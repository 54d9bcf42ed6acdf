"""Data Label agent (classification): folder-name labels, seed-set model labels, review.

Policy, in order, for each collected sample:

1. the source gave a class (its class folder): take it as a weak label (``folder-name``,
   confidence 1.0, the user's assertion); when a classifier is available it checks the label, and
   a confident disagreement sends the sample to review instead;
2. otherwise a classifier labels it; below ``quality.min_confidence`` it goes to review.

Samples of an existing dataset keep the label of their class folder (``existing``).
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence

from PIL import Image

from datasetagent.models import ImageClassifier
from datasetagent.records import ClassLabel, Sample
from datasetagent.spec import DatasetSpec
from datasetagent.store import BlobStore, RunStore

log = logging.getLogger(__name__)

FOLDER_LABELER = "folder-name"
EXISTING_LABELER = "existing"
BATCH = 256


def no_labeler_message(unhinted: int) -> str:
    return (
        f"no labeler can label {unhinted} collected image(s) that carry no class: give seed "
        "examples with --existing DIR (one folder per class), put the images in one folder per "
        "class, or configure a model backend with --labeler"
    )


class DataLabelAgent:
    def __init__(
        self,
        store: RunStore,
        blobs: BlobStore,
        spec: DatasetSpec,
        classifier: ImageClassifier | None,
    ) -> None:
        self.store = store
        self.blobs = blobs
        self.spec = spec
        self.classifier = classifier

    def load(self, sample: Sample) -> Image.Image:
        with Image.open(self.blobs.path(sample.blob)) as img:
            img.load()
            return img

    def run_round(self, round_: int) -> Counter[str]:
        """Label every processed, unlabelled sample of ``round_``; returns status counts."""
        todo = self.store.samples(status=["processed"], round_=round_)
        counts: Counter[str] = Counter()
        for start in range(0, len(todo), BATCH):
            done = self.label_batch(todo[start : start + BATCH])
            self.store.update_samples(done)
            counts.update(s.status for s in done)
        return counts

    def label_batch(self, samples: Sequence[Sample]) -> list[Sample]:
        need_model = [s for s in samples if s.origin != "existing" and self.classifier is not None]
        preds = {}
        if need_model and self.classifier is not None:
            images = [self.load(s) for s in need_model]
            preds = dict(
                zip((s.id for s in need_model), self.classifier.predict(images), strict=True)
            )
        min_conf = self.spec.quality.min_confidence
        out: list[Sample] = []
        for s in samples:
            hint = s.provenance.source_label
            pred = preds.get(s.id)
            reasons: list[str] = []
            if s.origin == "existing" and hint is not None:
                label = self.spec.resolve_class(hint) or hint
                ann = ClassLabel(label=label, confidence=1.0, labeler=EXISTING_LABELER)
            elif hint is not None:
                ann = ClassLabel(label=hint, confidence=1.0, labeler=FOLDER_LABELER)
                if pred is not None and pred.label != hint and pred.confidence >= min_conf:
                    reasons.append(
                        f"folder says {hint}, {self.classifier_name} says {pred.label} "
                        f"({pred.confidence:.2f})"
                    )
            elif pred is not None:
                ann = ClassLabel(
                    label=pred.label, confidence=pred.confidence, labeler=self.classifier_name
                )
                if pred.confidence < min_conf:
                    reasons.append(f"confidence {pred.confidence:.2f} < {min_conf:.2f}")
            else:
                out.append(
                    s.model_copy(
                        update={"status": "review", "review_reasons": (no_labeler_message(1),)}
                    )
                )
                continue
            status = "review" if reasons else "labelled"
            out.append(
                s.model_copy(
                    update={
                        "annotations": (ann,),
                        "status": status,
                        "review_reasons": tuple(reasons),
                    }
                )
            )
        return out

    @property
    def classifier_name(self) -> str:
        return self.classifier.name if self.classifier is not None else "none"
