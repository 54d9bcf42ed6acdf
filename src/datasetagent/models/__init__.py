"""Model backends. Agent code reaches models only through the protocols defined here."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from PIL import Image


@dataclass(frozen=True)
class Prediction:
    """One image's class prediction: the top class, its confidence, and every class's share."""

    label: str
    confidence: float
    probs: dict[str, float]


class ImageClassifier(Protocol):
    """Predicts classes of whole images with calibrated confidences."""

    name: str

    @property
    def classes(self) -> tuple[str, ...]: ...

    def predict(self, images: list[Image.Image]) -> list[Prediction]: ...
