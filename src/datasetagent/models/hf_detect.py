"""Open-vocabulary detectors: OWLv2 and Grounding DINO.

Both turn the spec's class phrases into text queries once, when built, and map a hit on any
phrase to the phrase's class. OWLv2's query embeddings are computed once (a prompt ensemble per
phrase) and every batch runs only the image tower and the two small heads; Grounding DINO fuses
text and image inside the model, so its tokenised prompt (the phrases joined by ". ", split into
several prompts when they exceed the model's text length) goes with every batch.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from PIL import Image

from datasetagent.errors import BackendError
from datasetagent.models import PROMPT_TEMPLATES, BackendConfig, Detection, Prepared
from datasetagent.models.hf_base import HFBackend, OptionValue, class_prompts, features
from datasetagent.models.hf_boxes import cxcywh_to_xyxy, detections, phrase_to_class

log = logging.getLogger(__name__)


def _phrases(config: BackendConfig) -> tuple[list[str], list[int]]:
    """Every class phrase, and the index of the class it belongs to."""
    phrases: list[str] = []
    owners: list[int] = []
    for i, query in enumerate(config.classes):
        for phrase in query.phrases:
            phrases.append(phrase)
            owners.append(i)
    return phrases, owners


class _Detector(HFBackend):
    """Shared loading and post-processing: thresholds, NMS and the mapping to ``Detection``."""

    def _load_detector(self, model_class: Any) -> tuple[Any, Any]:
        """(processor, model) of the checkpoint; there must be classes to look for."""
        if not self.config.classes:
            raise BackendError(f"{self.name} needs at least one class to look for")
        from transformers import AutoProcessor

        return self._load(AutoProcessor, "processor"), self._load(model_class, "model")

    def _detect_batch(self, prepared: Prepared) -> list[list[Detection]]:
        raise NotImplementedError

    def detect(self, images: list[Image.Image] | Prepared) -> list[list[Detection]]:
        return self._batched(images, self._detect_batch)

    def _finish(
        self, class_scores: np.ndarray, boxes: np.ndarray, sizes: list[tuple[int, int]]
    ) -> list[list[Detection]]:
        """Per image: (boxes, classes) scores and (boxes, 4) xyxy pixel boxes → detections."""
        names = self.config.class_names
        return [
            detections(
                class_scores[i],
                boxes[i],
                names,
                size,
                threshold=float(self.options["score_threshold"]),
                nms_iou=float(self.options["nms_iou"]),
                max_per_class=int(self.options["max_per_class"]),
            )
            for i, size in enumerate(sizes)
        ]


DETECTOR_DEFAULTS: dict[str, OptionValue] = {"nms_iou": 0.5, "max_per_class": 50}


class Owlv2Detector(_Detector):
    option_defaults: ClassVar[Mapping[str, OptionValue]] = {
        "score_threshold": 0.2,
        **DETECTOR_DEFAULTS,
    }

    def __init__(self, backend: str, config: BackendConfig, model_id: str, folder: Path) -> None:
        super().__init__(backend, config, model_id, folder)
        from transformers import Owlv2ForObjectDetection

        self._require_model_type("owlv2")
        processor, model = self._load_detector(Owlv2ForObjectDetection)
        self.model = self._placed(model)
        # OWLv2 pads to a square before resizing; a processor saved without padding resizes
        pad = getattr(processor.image_processor, "do_pad", True) is not False
        self._pad = pad
        self._set_prep(processor.image_processor, "pad_square" if pad else "square")
        self._phrases, self._owners = _phrases(config)
        self.queries = self._query_embeddings(processor.tokenizer)

    def _query_embeddings(self, tokenizer: Any) -> torch.Tensor:
        """(phrases, dim): each phrase's prompt-ensemble text embedding, on the device."""
        prompts: list[str] = []
        for phrase in self._phrases:
            prompts.extend(class_prompts(phrase, PROMPT_TEMPLATES))
        max_length = int(self.model.config.text_config.max_position_embeddings)
        tokens = tokenizer(
            prompts,
            padding="max_length",
            truncation=True,
            max_length=max_length,
            return_tensors="pt",
        )
        with torch.inference_mode():
            out = features(
                self.model.owlv2.get_text_features(
                    input_ids=tokens["input_ids"].to(self.device),
                    attention_mask=tokens["attention_mask"].to(self.device),
                )
            ).float()
        out = torch.nn.functional.normalize(out, dim=-1)
        per_phrase = out.reshape(len(self._phrases), len(PROMPT_TEMPLATES), -1).mean(dim=1)
        placed: torch.Tensor = per_phrase.to(dtype=self.dtype)
        return placed

    def raw(self, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """(images, boxes, phrases) sigmoid scores and (images, boxes, 4) xyxy boxes as
        fractions of the padded square's side -- the model's own outputs, for tests."""
        pixels = self._pixels(prepared)
        model = self.model
        with torch.inference_mode():
            feature_map = model.image_embedder(pixel_values=self._tensor(pixels.pixel_values))[0]
            b, h, w, d = feature_map.shape
            image_feats = feature_map.reshape(b, h * w, d)
            queries = self.queries.unsqueeze(0).expand(b, -1, -1)
            logits = model.class_predictor(image_feats, queries, None)[0]
            boxes = model.box_predictor(image_feats, feature_map)
        self._count(b)
        scores = torch.sigmoid(logits.float()).cpu().numpy()
        xyxy = cxcywh_to_xyxy(boxes.float().cpu().numpy().reshape(-1, 4)).reshape(b, -1, 4)
        return scores, xyxy

    def _detect_batch(self, prepared: Prepared) -> list[list[Detection]]:
        scores, boxes = self.raw(prepared)
        sizes = prepared.sizes
        scale = np.asarray([[max(w, h)] * 2 if self._pad else [w, h] for w, h in sizes], np.float64)
        pixels = boxes * np.tile(scale, 2)[:, None, :]
        class_scores = phrase_to_class(scores, self._owners, len(self.config.classes))
        return self._finish(class_scores, pixels, sizes)


@dataclass(frozen=True)
class _Prompt:
    """One tokenised Grounding DINO prompt and, per phrase in it, the token positions."""

    inputs: dict[str, torch.Tensor]
    phrases: list[int]
    tokens: list[list[int]]


class GroundingDinoDetector(_Detector):
    option_defaults: ClassVar[Mapping[str, OptionValue]] = {
        "score_threshold": 0.3,
        **DETECTOR_DEFAULTS,
    }

    def __init__(self, backend: str, config: BackendConfig, model_id: str, folder: Path) -> None:
        super().__init__(backend, config, model_id, folder)
        from transformers import AutoModelForZeroShotObjectDetection

        self._require_model_type("grounding-dino", "mm-grounding-dino")
        processor, model = self._load_detector(AutoModelForZeroShotObjectDetection)
        self.model = self._placed(model)
        self._set_prep(processor.image_processor, "fit")
        self._phrases, self._owners = _phrases(config)
        self.prompts = self._tokenise(processor.tokenizer, int(model.config.max_text_len))

    def _tokenise(self, tokenizer: Any, max_len: int) -> list[_Prompt]:
        """Group phrases into prompts ``"p1. p2. ..."`` of at most ``max_len`` tokens."""
        prompts: list[_Prompt] = []
        group: list[int] = []

        def encode(members: list[int]) -> tuple[Any, str, list[tuple[int, int]]]:
            spans = []
            text = ""
            for i in members:
                phrase = " ".join(self._phrases[i].lower().split()).replace(".", " ").strip()
                spans.append((len(text), len(text) + len(phrase)))
                text += phrase + ". "
            text = text.strip()
            enc = tokenizer(text, return_offsets_mapping=True, return_tensors="pt")
            return enc, text, spans

        def close(members: list[int]) -> None:
            enc, _, spans = encode(members)
            offsets = enc.pop("offset_mapping")[0].tolist()
            tokens = [
                [j for j, (s, e) in enumerate(offsets) if e > s and s >= lo and e <= hi]
                for lo, hi in spans
            ]
            inputs = {k: v.to(self.device) for k, v in enc.items()}
            prompts.append(_Prompt(inputs=inputs, phrases=list(members), tokens=tokens))

        for i in range(len(self._phrases)):
            if group and encode([*group, i])[0]["input_ids"].shape[1] > max_len:
                close(group)
                group = []
            if encode([i])[0]["input_ids"].shape[1] > max_len:
                raise BackendError(
                    f"class phrase {self._phrases[i]!r} is longer than {self.name}'s text limit "
                    f"of {max_len} tokens; shorten the class prompt"
                )
            group.append(i)
        close(group)
        return prompts

    def raw(self, prepared: Prepared) -> tuple[np.ndarray, np.ndarray]:
        """(images, queries, phrases) sigmoid scores and (images, queries, 4) xyxy boxes as
        fractions of each image's width and height, over all prompts."""
        pixels = self._pixels(prepared)
        values = self._tensor(pixels.pixel_values)
        if pixels.pixel_mask is None:
            raise BackendError(f"{self.name} got a batch without a pixel mask")
        mask = self._tensor(pixels.pixel_mask, floating=False)
        b = values.shape[0]
        all_scores, all_boxes = [], []
        with torch.inference_mode():
            for prompt in self.prompts:
                text = {k: v.expand(b, -1) for k, v in prompt.inputs.items()}
                out = self.model(pixel_values=values, pixel_mask=mask, **text)
                probs = torch.sigmoid(out.logits.float())
                scores = torch.zeros((*probs.shape[:2], len(self._phrases)), device=probs.device)
                for phrase, tokens in zip(prompt.phrases, prompt.tokens, strict=True):
                    if tokens:
                        scores[..., phrase] = probs[..., tokens].max(dim=-1).values
                all_scores.append(scores.cpu().numpy())
                all_boxes.append(out.pred_boxes.float().cpu().numpy())
        self._count(b)
        self.usage.calls += len(self.prompts) - 1  # a forward pass per prompt
        scores_np = np.concatenate(all_scores, axis=1)
        boxes_np = np.concatenate(all_boxes, axis=1)
        xyxy = cxcywh_to_xyxy(boxes_np.reshape(-1, 4)).reshape(b, -1, 4)
        return scores_np, xyxy

    def _detect_batch(self, prepared: Prepared) -> list[list[Detection]]:
        scores, boxes = self.raw(prepared)
        sizes = prepared.sizes
        scale = np.asarray([[w, h, w, h] for w, h in sizes], np.float64)
        class_scores = phrase_to_class(scores, self._owners, len(self.config.classes))
        return self._finish(class_scores, boxes * scale[:, None, :], sizes)
