"""CLIP and SigLIP: zero-shot classification by prompt ensembles, and image embeddings.

See ``models.hf`` for what the confidences mean. Class text embeddings are computed once, when
the backend is built; a batch of images then costs one image-tower forward pass, shared by
``predict``, ``embed`` and ``predict_and_embed``.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image

from datasetagent.errors import BackendError
from datasetagent.models import PROMPT_TEMPLATES, BackendConfig, Prediction, Prepared
from datasetagent.models import softmax_prediction as prediction_of
from datasetagent.models.hf_base import HFBackend, class_prompts, features

log = logging.getLogger(__name__)

#: Prompts embedded per text forward pass when the class embeddings are built.
_TEXT_BATCH = 256


def _normalise(x: np.ndarray) -> np.ndarray:
    norms = np.linalg.norm(x, axis=-1, keepdims=True)
    out: np.ndarray = (x / np.maximum(norms, 1e-12)).astype(np.float32)
    return out


class ZeroShotClassifier(HFBackend):
    """``ImageClassifier`` and ``ImageEmbedder`` over a CLIP or SigLIP checkpoint.

    Which scoring applies follows the checkpoint, not the labeler name: a model with a
    ``logit_bias`` (SigLIP) is scored with sigmoids, one without (CLIP) with a softmax.
    """

    def __init__(self, backend: str, config: BackendConfig, model_id: str, folder: Path) -> None:
        super().__init__(backend, config, model_id, folder)
        if not config.classes:
            raise BackendError(f"{self.name} needs at least one class to classify into")
        from transformers import AutoModel, AutoProcessor

        processor = self._load(AutoProcessor, "processor")
        model = self._load(AutoModel, "model")
        if not hasattr(model, "get_image_features") or not hasattr(model, "get_text_features"):
            raise BackendError(
                f"{self.model_id!r} is a {type(model).__name__}, not a CLIP-style image-text "
                f"model; give the {backend} labeler a CLIP or SigLIP checkpoint"
            )
        self.model = self._placed(model)
        self.sigmoid = hasattr(model, "logit_bias")
        model_type = str(getattr(model.config, "model_type", ""))
        # SigLIP was trained on text padded to its full length and pools the last token
        self._pad_full = self.sigmoid or model_type.startswith("siglip")
        # CLIP: shortest edge and centre crop; SigLIP: a plain resize to the square
        crop = bool(getattr(processor.image_processor, "do_center_crop", False))
        self._set_prep(processor.image_processor, "crop" if crop else "square")
        self._classes = config.class_names
        self.scale = float(model.logit_scale.detach().exp())
        self.bias = float(model.logit_bias.detach()) if self.sigmoid else 0.0
        self.text = self._class_embeddings(processor.tokenizer)

    @property
    def classes(self) -> tuple[str, ...]:
        return self._classes

    def _class_embeddings(self, tokenizer: Any) -> np.ndarray:
        """(classes, dim): per class, the mean of its normalised prompt embeddings, normalised."""
        prompts: list[str] = []
        owner: list[int] = []
        for i, query in enumerate(self.config.classes):
            for phrase in query.phrases:
                texts = class_prompts(phrase, PROMPT_TEMPLATES)
                prompts.extend(texts)
                owner.extend([i] * len(texts))
        max_length = int(self.model.config.text_config.max_position_embeddings)
        chunks = []
        with torch.inference_mode():
            for start in range(0, len(prompts), _TEXT_BATCH):
                tokens = tokenizer(
                    prompts[start : start + _TEXT_BATCH],
                    padding="max_length" if self._pad_full else True,
                    truncation=True,
                    max_length=max_length,
                    return_tensors="pt",
                )
                kwargs = {"input_ids": tokens["input_ids"].to(self.device)}
                if "attention_mask" in tokens and not self._pad_full:
                    kwargs["attention_mask"] = tokens["attention_mask"].to(self.device)
                out = features(self.model.get_text_features(**kwargs))
                chunks.append(out.float().cpu().numpy())
        each = _normalise(np.concatenate(chunks))
        owners = np.asarray(owner)
        means = np.stack([each[owners == i].mean(axis=0) for i in range(len(self.config.classes))])
        return _normalise(means)

    def _image_embeddings(self, prepared: Prepared) -> np.ndarray:
        pixels = self._pixels(prepared)
        with torch.inference_mode():
            out = features(self.model.get_image_features(self._tensor(pixels.pixel_values)))
        self._count(len(pixels.sizes))
        return _normalise(out.float().cpu().numpy())

    def probabilities(self, embeddings: np.ndarray) -> np.ndarray:
        """(n, classes) shares summing to 1 per row, from normalised image embeddings."""
        logits = self.scale * (embeddings.astype(np.float64) @ self.text.T.astype(np.float64))
        if self.sigmoid:
            scores = 1.0 / (1.0 + np.exp(-(logits + self.bias)))
        else:
            scores = np.exp(logits - logits.max(axis=1, keepdims=True))
        shares: np.ndarray = scores / np.maximum(scores.sum(axis=1, keepdims=True), 1e-300)
        return shares

    def _predict_batch(self, prepared: Prepared) -> list[tuple[Prediction, np.ndarray]]:
        emb = self._image_embeddings(prepared)
        probs = self.probabilities(emb)
        return [(prediction_of(self._classes, p), e) for p, e in zip(probs, emb, strict=True)]

    def predict_and_embed(
        self, images: list[Image.Image] | Prepared
    ) -> tuple[list[Prediction], np.ndarray]:
        """Predictions and embeddings from one forward pass per batch."""
        pairs = self._batched(images, self._predict_batch)
        dim = self.text.shape[1]
        emb = np.stack([e for _, e in pairs]) if pairs else np.zeros((0, dim), np.float32)
        return [p for p, _ in pairs], emb

    def predict(self, images: list[Image.Image] | Prepared) -> list[Prediction]:
        return [p for p, _ in self._batched(images, self._predict_batch)]

    def embed(self, images: list[Image.Image] | Prepared) -> np.ndarray:
        """L2-normalised image embeddings, (n, dim) float32."""
        rows = self._batched(images, lambda b: list(self._image_embeddings(b)))
        if not rows:
            return np.zeros((0, self.text.shape[1]), np.float32)
        return np.stack(rows).astype(np.float32)
