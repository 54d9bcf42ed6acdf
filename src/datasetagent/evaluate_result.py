"""What ``datasetagent evaluate`` found, as stored with the run (meta ``evaluation``).

Light on purpose: the report and the data card read it without loading a model library.
``Evaluation.as_json`` is the ``--json`` output: ``trained_on_export``, ``trained_on_seed``
(null where the run expanded no dataset) and ``test``, plus ``task``, ``model`` and ``when``.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

#: The run store's meta key of the last evaluation.
EVALUATION_META = "evaluation"


class Scores(BaseModel):
    """One trained model's held-out scores. Classification: ``accuracy``, ``per_class``
    accuracy (the share of the class's test images given that class) and ``confusion`` (counts,
    true class → predicted class → images). Detection: COCO ``map`` (AP at IoU .50:.95),
    ``map50`` and ``per_class`` AP (null where the test set has no object of the class)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n_train: int
    per_class: dict[str, float | None]
    accuracy: float | None = None
    confusion: dict[str, dict[str, int]] | None = None
    map: float | None = None
    map50: float | None = None
    #: Detection: the objects of the training images.
    n_train_objects: int | None = None

    def headline(self) -> str:
        """``accuracy 0.9100`` or ``mAP 0.4120 (mAP@.5 0.7000)``."""
        if self.accuracy is not None:
            return f"accuracy {self.accuracy:.4f}"
        return f"mAP {self.map or 0.0:.4f} (mAP@.5 {self.map50 or 0.0:.4f})"


class TestSet(BaseModel):
    """The held-out folder: images scored (``n``), left out because they carry no class of
    the run (``skipped``; detection: objects of other classes) or because their pixels are a
    training image's (``overlap``)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    n: int
    path: str
    skipped: int
    overlap: int
    #: Detection: the objects of the scored images.
    objects: int | None = None


class Evaluation(BaseModel):
    """One ``evaluate`` of a run."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    task: Literal["classification", "detection", "segmentation"]
    #: ``seed-features``, ``linear-probe:clip:MODEL``, ``box-prior:seed-features`` or
    #: ``detector-command:ARGV0``.
    model: str
    trained_on_export: Scores
    trained_on_seed: Scores | None
    test: TestSet
    #: When it ran, ISO 8601 UTC.
    when: str

    @property
    def classes(self) -> list[str]:
        """The classes scored, in the order of the export's ``per_class``."""
        return list(self.trained_on_export.per_class)

    def as_json(self) -> dict[str, Any]:
        """The ``--json`` object: the issue's keys first; a score's unset fields left out."""
        seed = self.trained_on_seed
        return {
            "trained_on_export": self.trained_on_export.model_dump(exclude_none=True),
            "trained_on_seed": seed.model_dump(exclude_none=True) if seed is not None else None,
            "test": self.test.model_dump(exclude_none=True),
            "task": self.task,
            "model": self.model,
            "when": self.when,
        }

    def trained(self) -> list[tuple[str, Scores]]:
        """(what it was trained on, its scores) of each model trained."""
        out = [("the export's train and val splits", self.trained_on_export)]
        if self.trained_on_seed is not None:
            out.append(("the existing dataset alone", self.trained_on_seed))
        return out


def load_evaluation(raw: str | None) -> Evaluation | None:
    """The stored evaluation (meta ``evaluation``), or None where the run was never evaluated
    or the record is unreadable (an older tool's)."""
    if raw is None:
        return None
    try:
        return Evaluation.model_validate_json(raw)
    except ValueError:
        return None
