"""SAM: box-prompted masks.

The image encoder -- nearly all of SAM's cost -- runs once per image, batched; the prompt
encoder and mask decoder then run per image on its boxes. Masks are upscaled the way
``SamImageProcessor.post_process_masks`` does it (to the padded input, cropped to the resized
image, then to the original size, bilinear) and thresholded on the logits.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from datasetagent.errors import BackendError
from datasetagent.models import BackendConfig, Prepared
from datasetagent.models.hf import run_overlapped
from datasetagent.models.hf_base import HFBackend, OptionValue

log = logging.getLogger(__name__)

Box = tuple[float, float, float, float]

#: Boxes decoded and upscaled together; bounds the memory of the upscaled logits.
_BOX_CHUNK = 16


class SamSegmenter(HFBackend):
    """``BoxSegmenter``: for each image, one boolean (height, width) mask per box."""

    option_defaults: ClassVar[Mapping[str, OptionValue]] = {"mask_threshold": 0.0}

    def __init__(self, backend: str, config: BackendConfig, model_id: str, folder: Path) -> None:
        super().__init__(backend, config, model_id, folder)
        from transformers import AutoProcessor, SamModel

        self._require_model_type("sam")
        processor = self._load(AutoProcessor, "processor")
        self.model = self._placed(self._load(SamModel, "model"))
        self._set_prep(processor.image_processor, "longest")

    def _segment_batch(
        self, prepared: Prepared, boxes: Sequence[Sequence[Box]]
    ) -> list[list[np.ndarray]]:
        pixels = self._pixels(prepared)
        if len(boxes) != len(pixels.sizes):
            raise BackendError(
                f"{self.name} got {len(pixels.sizes)} images and {len(boxes)} lists of boxes; "
                "give one list (maybe empty) per image"
            )
        threshold = float(self.options["mask_threshold"])
        pad_h, pad_w = pixels.pixel_values.shape[2:]
        out: list[list[np.ndarray]] = []
        with torch.inference_mode():
            embeddings = self.model.get_image_embeddings(self._tensor(pixels.pixel_values))
            for i, ((w, h), (rh, rw)) in enumerate(zip(pixels.sizes, pixels.resized, strict=True)):
                given = np.asarray(boxes[i], np.float32).reshape(-1, 4)
                masks: list[np.ndarray] = []
                given[:, [0, 2]] = np.clip(given[:, [0, 2]], 0, w) * (rw / w)
                given[:, [1, 3]] = np.clip(given[:, [1, 3]], 0, h) * (rh / h)
                for start in range(0, len(given), _BOX_CHUNK):
                    chunk = self._tensor(given[None, start : start + _BOX_CHUNK])
                    result = self.model(
                        image_embeddings=embeddings[i : i + 1],
                        input_boxes=chunk,
                        multimask_output=False,
                    )
                    low = result.pred_masks[0, :, :1].float()
                    up = F.interpolate(low, (pad_h, pad_w), mode="bilinear", align_corners=False)
                    up = up[..., :rh, :rw]
                    up = F.interpolate(up, (h, w), mode="bilinear", align_corners=False)
                    masks.extend(m for m in (up[:, 0] > threshold).cpu().numpy())
                out.append(masks)
        self._count(len(pixels.sizes))
        return out

    def segment(
        self,
        images: list[Image.Image] | Prepared,
        boxes: list[list[Box]],
    ) -> list[list[np.ndarray]]:
        if isinstance(images, Prepared):
            return self._segment_batch(images, boxes)
        if len(images) != len(boxes):
            raise BackendError(
                f"{self.name} got {len(images)} images and {len(boxes)} lists of boxes; give "
                "one list (maybe empty) per image"
            )
        out: list[list[np.ndarray]] = [[] for _ in images]
        todo = [i for i, b in enumerate(boxes) if b]  # no boxes, no encoder pass
        chunks = [todo[s : s + self.batch_size] for s in range(0, len(todo), self.batch_size)]

        def prepare(chunk: list[int]) -> tuple[list[int], Prepared]:
            return chunk, self.prepare([images[i] for i in chunk])

        def infer(item: tuple[list[int], Prepared]) -> tuple[list[int], list[list[np.ndarray]]]:
            chunk, prepared = item
            return chunk, self._segment_batch(prepared, [boxes[i] for i in chunk])

        for chunk, masks in run_overlapped(chunks, prepare, infer):
            for i, m in zip(chunk, masks, strict=True):
                out[i] = m
        return out
