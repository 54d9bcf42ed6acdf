"""Image preprocessing for the transformers backends, in numpy and OpenCV.

The processors that ship with transformers resize through PIL one image at a time and, without
torchvision, spend most of a labelling run's CPU time there (OWLv2's Gaussian anti-aliasing at
960 px alone costs about a second an image). This module reproduces what each processor's saved
config asks for -- the resize rule, crop or padding, rescale and mean/std normalisation -- with
OpenCV, which is several times faster, releases the GIL, and so can run on a background thread
while the model runs (see ``models.hf.run_overlapped``).

Shrinking uses ``INTER_AREA`` whatever filter the config names: PIL's filters widen with the
scale factor (they anti-alias), OpenCV's bilinear and bicubic do not, and area averaging is the
OpenCV filter closest to PIL's anti-aliased shrink. Enlarging uses the config's filter. The
tests hold the result to the official processors' ``pixel_values`` within a small tolerance.

Nothing here imports torch; the arrays are float32, channels first.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, Literal

import cv2
import numpy as np
from PIL import Image

from datasetagent.errors import BackendError

#: PIL resampling codes (as saved in processor configs) and torchvision interpolation names
#: → OpenCV interpolation for enlarging.
_CV2_FILTERS: dict[int | str, int] = {
    0: cv2.INTER_NEAREST,
    1: cv2.INTER_LANCZOS4,
    2: cv2.INTER_LINEAR,
    3: cv2.INTER_CUBIC,
    4: cv2.INTER_AREA,
    5: cv2.INTER_LINEAR,
    "nearest": cv2.INTER_NEAREST,
    "nearest-exact": cv2.INTER_NEAREST,
    "lanczos": cv2.INTER_LANCZOS4,
    "bilinear": cv2.INTER_LINEAR,
    "bicubic": cv2.INTER_CUBIC,
    "box": cv2.INTER_AREA,
    "hamming": cv2.INTER_LINEAR,
}


def _interpolation(resample: Any) -> int:
    """The OpenCV filter for a processor's ``resample``: a PIL code, or (with the torchvision
    backend) an ``InterpolationMode`` whose value is its name. Unknown: bilinear."""
    key = getattr(resample, "value", resample)
    if isinstance(key, str):
        return _CV2_FILTERS.get(key.lower(), cv2.INTER_LINEAR)
    try:
        return _CV2_FILTERS.get(int(key), cv2.INTER_LINEAR)
    except (TypeError, ValueError):
        return cv2.INTER_LINEAR


#: How a processor fits an image to the model: ``crop`` shortest edge then centre crop (CLIP),
#: ``square`` plain resize to height × width (SigLIP), ``pad_square`` pad bottom/right to a square
#: then resize (OWLv2), ``fit`` shortest edge capped by a longest edge, batch padded to its
#: largest image with a pixel mask (DETR family, Grounding DINO), ``longest`` longest edge then
#: padded to a fixed square (SAM).
Geometry = Literal["crop", "square", "pad_square", "fit", "longest"]

Reshape = Callable[[np.ndarray], np.ndarray]


def rgb_array(image: Image.Image) -> np.ndarray:
    """The image as a (height, width, 3) uint8 array."""
    if image.mode != "RGB":
        image = image.convert("RGB")
    return np.asarray(image)


def resize(rgb: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    """Resize to (height, width): area averaging along axes that shrink, ``interpolation`` along
    axes that grow (two passes when one axis shrinks and the other grows)."""
    h, w = rgb.shape[:2]
    if (h, w) == (height, width):
        return rgb
    if height <= h and width <= w:
        return cv2.resize(rgb, (width, height), interpolation=cv2.INTER_AREA)
    if height >= h and width >= w:
        return cv2.resize(rgb, (width, height), interpolation=interpolation)
    mid_h, mid_w = min(h, height), min(w, width)
    rgb = cv2.resize(rgb, (mid_w, mid_h), interpolation=cv2.INTER_AREA)
    return cv2.resize(rgb, (width, height), interpolation=interpolation)


def shortest_edge_crop(
    rgb: np.ndarray, shortest: int, crop_h: int, crop_w: int, interpolation: int
) -> np.ndarray:
    """CLIP's rule: shortest edge to ``shortest`` (the long edge truncated, as transformers does),
    then a centre crop, zero-padded where the image is smaller than the crop."""
    h, w = rgb.shape[:2]
    if w <= h:
        new_w, new_h = shortest, int(shortest * h / w)
    else:
        new_h, new_w = shortest, int(shortest * w / h)
    rgb = resize(rgb, new_h, new_w, interpolation)
    top, left = (new_h - crop_h) // 2, (new_w - crop_w) // 2
    if top >= 0 and left >= 0:
        return rgb[top : top + crop_h, left : left + crop_w]
    out = np.zeros((max(crop_h, new_h), max(crop_w, new_w), 3), np.uint8)
    pad_top, pad_left = -(-(out.shape[0] - new_h) // 2), -(-(out.shape[1] - new_w) // 2)
    out[pad_top : pad_top + new_h, pad_left : pad_left + new_w] = rgb
    top, left = (out.shape[0] - crop_h) // 2, (out.shape[1] - crop_w) // 2
    return out[top : top + crop_h, left : left + crop_w]


def exact(rgb: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    return resize(rgb, height, width, interpolation)


def pad_square(rgb: np.ndarray, height: int, width: int, interpolation: int) -> np.ndarray:
    """OWLv2's rule: pad bottom and right with black to a square, then resize. Boxes the model
    gives are therefore fractions of the padded square's side."""
    h, w = rgb.shape[:2]
    side = max(h, w)
    if h != w:
        square = np.zeros((side, side, 3), np.uint8)
        square[:h, :w] = rgb
        rgb = square
    return resize(rgb, height, width, interpolation)


def fit_size(h: int, w: int, shortest: int, longest: int | None) -> tuple[int, int]:
    """The DETR family's output size: shortest edge to ``shortest`` unless that makes the longest
    edge exceed ``longest`` (transformers' ``get_size_with_aspect_ratio``)."""
    size = shortest
    raw: float | None = None
    if longest is not None:
        lo, hi = float(min(h, w)), float(max(h, w))
        if hi / lo * size > longest:
            raw = longest * lo / hi
            size = round(raw)
    if (h <= w and h == size) or (w <= h and w == size):
        return h, w
    if w < h:
        return (int(raw * h / w) if raw is not None else int(size * h / w)), size
    return size, (int(raw * w / h) if raw is not None else int(size * w / h))


def fit(rgb: np.ndarray, shortest: int, longest: int | None, interpolation: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return resize(rgb, *fit_size(h, w, shortest, longest), interpolation)


def longest_size(h: int, w: int, longest: int) -> tuple[int, int]:
    """SAM's output size: longest edge to ``longest``, rounded half up."""
    scale = longest / max(h, w)
    return int(h * scale + 0.5), int(w * scale + 0.5)


def longest_edge(rgb: np.ndarray, longest: int, interpolation: int) -> np.ndarray:
    h, w = rgb.shape[:2]
    return resize(rgb, *longest_size(h, w, longest), interpolation)


@dataclass(frozen=True)
class Pixels:
    """A preprocessed batch: ``pixel_values`` (n, 3, H, W) float32; ``pixel_mask`` (n, H, W)
    int64 marking real pixels where the batch is padded (``fit``), else None; ``sizes`` the
    (width, height) passed in; ``resized`` the (height, width) each image had before padding."""

    pixel_values: np.ndarray
    pixel_mask: np.ndarray | None
    sizes: list[tuple[int, int]]
    resized: list[tuple[int, int]]


@dataclass(frozen=True)
class ImagePrep:
    """A processor config turned into a fast, thread-safe callable: images → ``Pixels``."""

    geometry: Geometry
    reshape: Reshape
    #: Per channel: pixel * scale - offset == (pixel * rescale - mean) / std.
    scale: np.ndarray
    offset: np.ndarray
    #: Pad every image to this (height, width) after normalising (SAM); None: no fixed padding.
    pad_to: tuple[int, int] | None = None

    def __call__(self, images: Sequence[Image.Image]) -> Pixels:
        if not images:
            raise BackendError("no images to prepare: pass at least one image")
        arrays = [self.reshape(rgb_array(img)) for img in images]
        sizes = [img.size for img in images]
        resized = [(a.shape[0], a.shape[1]) for a in arrays]
        if self.pad_to is not None:
            height, width = self.pad_to
        else:
            height = max(h for h, _ in resized)
            width = max(w for _, w in resized)
        out = np.zeros((len(arrays), 3, height, width), np.float32)
        for i, a in enumerate(arrays):
            h, w = a.shape[:2]
            normed = a.astype(np.float32) * self.scale - self.offset
            out[i, :, :h, :w] = normed.transpose(2, 0, 1)
        mask = None
        if self.geometry == "fit":
            mask = np.zeros((len(arrays), height, width), np.int64)
            for i, (h, w) in enumerate(resized):
                mask[i, :h, :w] = 1
        return Pixels(pixel_values=out, pixel_mask=mask, sizes=sizes, resized=resized)


def _size(config: Any, name: str) -> Mapping[str, Any]:
    """A processor's size attribute as a plain mapping (it is a dict or a ``SizeDict``)."""
    value = getattr(config, name, None)
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return {k: v for k, v in value.items() if v is not None}
    return {k: v for k, v in vars(value).items() if v is not None}


def _triple(value: Any, what: str) -> np.ndarray:
    arr = np.asarray(value, np.float32).reshape(-1)
    if arr.size == 1:
        arr = np.repeat(arr, 3)
    if arr.size != 3:
        raise BackendError(f"image processor {what} {value!r} is not one value per RGB channel")
    return arr


def image_prep(processor: Any, geometry: Geometry) -> ImagePrep:
    """Read resize, crop, padding and normalisation settings from a transformers image
    processor (the object ``from_pretrained`` built from the model's saved config)."""
    interp = _interpolation(getattr(processor, "resample", None))
    size = _size(processor, "size")
    name = type(processor).__name__
    reshape: Reshape
    pad_to = None
    try:
        if geometry == "crop":
            crop = _size(processor, "crop_size")
            if not getattr(processor, "do_center_crop", False):
                raise KeyError("do_center_crop")
            reshape = partial(
                shortest_edge_crop,
                shortest=int(size["shortest_edge"]),
                crop_h=int(crop["height"]),
                crop_w=int(crop["width"]),
                interpolation=interp,
            )
        elif geometry in ("square", "pad_square"):
            fn = exact if geometry == "square" else pad_square
            reshape = partial(
                fn, height=int(size["height"]), width=int(size["width"]), interpolation=interp
            )
        elif geometry == "fit":
            longest = size.get("longest_edge")
            reshape = partial(
                fit,
                shortest=int(size["shortest_edge"]),
                longest=None if longest is None else int(longest),
                interpolation=interp,
            )
        else:
            pad = _size(processor, "pad_size")
            reshape = partial(longest_edge, longest=int(size["longest_edge"]), interpolation=interp)
            pad_to = (int(pad["height"]), int(pad["width"]))
    except KeyError as exc:
        raise BackendError(
            f"{name} settings {dict(size)} lack {exc.args[0]!r}, which {geometry!r} "
            "preprocessing needs; use the processor config the model was published with"
        ) from exc
    rescale = 1.0
    if getattr(processor, "do_rescale", True):
        rescale = float(getattr(processor, "rescale_factor", 1 / 255))
    if getattr(processor, "do_normalize", True):
        mean = _triple(processor.image_mean, "image_mean")
        std = _triple(processor.image_std, "image_std")
    else:
        mean, std = np.zeros(3, np.float32), np.ones(3, np.float32)
    return ImagePrep(
        geometry=geometry,
        reshape=reshape,
        scale=(rescale / std).astype(np.float32),
        offset=(mean / std).astype(np.float32),
        pad_to=pad_to,
    )
