"""The transformers backends, on tiny random models saved and loaded like hub checkpoints.

Outputs of random models mean nothing, so these tests check what does not depend on weights:
shapes and types, that the fast paths agree with the models' own forward passes and the official
processors, that batching changes nothing, that boxes and masks land in original pixels, the
confidences' definitions, and the error messages. Nothing reaches the network.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
from PIL import Image

from datasetagent.errors import BackendError, ConfigError
from datasetagent.models import (
    BACKENDS,
    Backend,
    BackendConfig,
    BoxSegmenter,
    ClassQuery,
    Detection,
    ImageClassifier,
    ImageEmbedder,
    ObjectDetector,
    Prediction,
    Prepared,
    Preparing,
    build_backend,
    hf,
    load_builtin_backends,
)
from datasetagent.tools.masks import mask_to_rle, rle_to_mask
from helpers import photos

pytest.importorskip("transformers")
pytest.importorskip("torch")

import torch

from datasetagent.models import hf_base, hf_detect, hf_zeroshot
from datasetagent.models.hf_base import (
    ThreadChooser,
    class_prompts,
    cpu_quota,
    cpu_threads,
    pick_device,
    read_options,
    usable_cores,
)
from datasetagent.models.hf_boxes import detections, nms, phrase_to_class
from datasetagent.models.hf_prep import image_prep
from tiny_models import BUILDERS

CLASSES = (
    ClassQuery("cat", ("a tabby cat", "cat", "kitten")),
    ClassQuery("dog", ("dog",)),
    ClassQuery("bird", ("bird", "small bird")),
)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models gain nothing from threads, and on a shared machine each op of a two-thread
    pool waits for whichever thread was descheduled (runs were 80 times slower)."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def tiny(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("tiny-models")
    return {name: build(root / name) for name, build in BUILDERS.items()}


@pytest.fixture(scope="session")
def images() -> list[Image.Image]:
    """Real photos in three shapes: landscape, portrait, small."""
    china, flower = photos()
    return [china, flower.resize((200, 300)), china.resize((90, 60))]


def _build(name: str, folder: Path, **kw: Any) -> Any:
    return build_backend(name, BackendConfig(classes=CLASSES, model=str(folder), **kw))


@pytest.fixture(scope="session")
def backends(tiny: dict[str, Path]) -> dict[str, Any]:
    detect = {"score_threshold": 0.0, "max_per_class": 5}
    return {
        "clip": _build("clip", tiny["clip"], batch_size=2),
        "siglip": _build("siglip", tiny["siglip"], batch_size=2),
        "owlv2": _build("owlv2", tiny["owlv2"], batch_size=2, options=detect),
        "grounding-dino": _build("grounding-dino", tiny["grounding-dino"], batch_size=2),
        "sam": _build("sam", tiny["sam"], batch_size=2),
    }


# --- registry and import ----------------------------------------------------------------------


def test_importing_the_module_imports_no_heavy_library() -> None:
    code = (
        "import sys, datasetagent.models.hf as hf; "
        "from datasetagent.models import BACKENDS; "
        "names = BACKENDS.names(); "
        "assert not {'torch', 'transformers'} & set(sys.modules), sorted(sys.modules); "
        "print(','.join(names))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert {"clip", "siglip", "owlv2", "grounding-dino", "sam"} <= set(
        out.stdout.strip().split(",")
    )


def test_every_backend_has_a_default_model_and_a_description() -> None:
    load_builtin_backends()
    assert set(hf.DEFAULT_MODELS) <= set(BACKENDS.names())
    for name, model in hf.DEFAULT_MODELS.items():
        factory = BACKENDS.get(name)
        assert getattr(factory, "default_model", None) == model  # shown by `models list`
        assert (factory.__doc__ or "").split(":")[0] in {
            "classification",
            "detection",
            "segmentation",
        }
    assert hf.DEFAULT_MODELS["clip"] == "openai/clip-vit-base-patch32"


# --- preprocessing against the official processors ---------------------------------------------

#: Mean absolute difference allowed, in normalised units (1 unit ≈ 60-70 grey levels). Resizing
#: differs from PIL's (area averaging when shrinking); a one-pixel shift or a 5 % contrast error
#: of the official output is several times these (checked below), so they still catch mistakes.
TOLERANCE = {"crop": 0.03, "square": 0.02, "pad_square": 0.006, "fit": 0.006, "longest": 0.006}

PROCESSORS = {
    "crop": "CLIPImageProcessor",
    "square": "SiglipImageProcessor",
    "pad_square": "Owlv2ImageProcessor",
    "fit": "GroundingDinoImageProcessor",
    "longest": "SamImageProcessor",
}


@pytest.mark.parametrize("geometry", list(PROCESSORS))
def test_preprocessing_matches_the_official_processor(
    geometry: Any, images: list[Image.Image]
) -> None:
    import transformers

    processor = getattr(transformers, PROCESSORS[geometry])()  # published default settings
    prep = image_prep(processor, geometry)
    china, flower = photos()
    for img in (china, flower.transpose(Image.Transpose.ROTATE_90), images[2]):
        ref = processor(images=[img], return_tensors="np")["pixel_values"]
        ours = prep([img]).pixel_values
        assert ours.shape == ref.shape
        assert ours.dtype == np.float32
        assert np.abs(ours - ref).mean() < TOLERANCE[geometry]
    # the tolerance is tight enough to notice a shifted crop or a wrong normalisation
    ref = processor(images=[china], return_tensors="np")["pixel_values"]
    assert np.abs(ref[..., 1:] - ref[..., :-1]).mean() > 2 * TOLERANCE[geometry]
    assert np.abs(ref * 1.05 - ref).mean() > 1.5 * TOLERANCE[geometry]


def test_batches_of_mixed_sizes_are_padded_with_a_mask() -> None:
    from transformers import GroundingDinoImageProcessor

    processor = GroundingDinoImageProcessor(size={"shortest_edge": 64, "longest_edge": 100})
    china, flower = photos()
    pixels = image_prep(processor, "fit")([china, flower.resize((100, 200))])
    ref = processor(images=[china, flower.resize((100, 200))], return_tensors="np")
    assert pixels.pixel_values.shape == ref["pixel_values"].shape
    assert pixels.pixel_mask is not None
    np.testing.assert_array_equal(pixels.pixel_mask, ref["pixel_mask"])
    assert pixels.sizes == [(640, 427), (100, 200)]


# --- zero-shot classification ------------------------------------------------------------------


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_classifier_outputs_and_roles(
    name: str, backends: dict[str, Any], tiny: dict[str, Path], images: list[Image.Image]
) -> None:
    b = backends[name]
    for role in (Backend, ImageClassifier, ImageEmbedder, Preparing):
        assert isinstance(b, role)
    assert b.name == f"{name}:{tiny[name]}"
    assert b.classes == ("cat", "dog", "bird")
    before = b.usage.images
    preds = b.predict(images)
    assert b.usage.images - before == 3
    assert len(preds) == 3
    for p in preds:
        assert isinstance(p, Prediction)
        assert set(p.probs) == {"cat", "dog", "bird"}
        assert sum(p.probs.values()) == pytest.approx(1.0)
        assert p.label == max(p.probs, key=lambda c: p.probs[c])
        assert p.confidence == p.probs[p.label]
    emb = b.embed(images)
    assert emb.dtype == np.float32
    assert emb.shape[0] == 3
    np.testing.assert_allclose(np.linalg.norm(emb, axis=1), 1.0, rtol=1e-5)
    both_preds, both_emb = b.predict_and_embed(images)
    np.testing.assert_allclose(both_emb, emb, atol=1e-6)
    assert [p.label for p in both_preds] == [p.label for p in preds]
    assert b.predict([]) == []
    assert b.embed([]).shape == (0, emb.shape[1])


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_classifier_batching_and_prepared_batches_change_nothing(
    name: str, backends: dict[str, Any], images: list[Image.Image]
) -> None:
    b = backends[name]
    batched = b.predict(images * 2)  # batch_size 2: three batches, overlapped
    single = [b.predict([img])[0] for img in images * 2]
    prepared = b.predict(b.prepare(images * 2))
    for x, y, z in zip(batched, single, prepared, strict=True):
        assert x.label == y.label == z.label
        for c in x.probs:
            assert x.probs[c] == pytest.approx(y.probs[c], abs=1e-5)
            assert x.probs[c] == pytest.approx(z.probs[c], abs=1e-5)
    assert isinstance(b.prepare(images), Prepared)
    assert b.prepare(images).sizes == [img.size for img in images]


def test_class_embeddings_average_every_phrase_in_every_template(
    backends: dict[str, Any], tiny: dict[str, Path]
) -> None:
    from transformers import AutoProcessor

    b = backends["clip"]
    tok = AutoProcessor.from_pretrained(tiny["clip"]).tokenizer
    prompts = [t.format(p) for t in hf_zeroshot.PROMPT_TEMPLATES for p in ("tabby cat", "cat")]
    prompts += [t.format("kitten") for t in hf_zeroshot.PROMPT_TEMPLATES]
    with torch.inference_mode():
        out = b.model.get_text_features(**tok(prompts, padding=True, return_tensors="pt"))
    each = getattr(out, "pooler_output", out).numpy()
    each /= np.linalg.norm(each, axis=1, keepdims=True)
    mean = each.mean(axis=0)
    np.testing.assert_allclose(b.text[0], mean / np.linalg.norm(mean), atol=1e-5)


@pytest.mark.parametrize("name", ["clip", "siglip"])
def test_confidence_is_the_models_own_scoring(
    name: str, tiny: dict[str, Path], images: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    """With one prompt per class, CLIP's probabilities are the softmax of the model's own
    ``logits_per_image`` and SigLIP's are its sigmoids, normalised over the classes."""
    from transformers import AutoProcessor

    monkeypatch.setattr(hf_zeroshot, "PROMPT_TEMPLATES", ("{}",))
    classes = (ClassQuery("cat", ("cat",)), ClassQuery("dog", ("dog",)))
    b = build_backend(name, BackendConfig(classes=classes, model=str(tiny[name])))
    tok = AutoProcessor.from_pretrained(tiny[name]).tokenizer
    pad = "max_length" if name == "siglip" else True
    text = tok(["cat", "dog"], padding=pad, max_length=16, truncation=True, return_tensors="pt")
    prepared = b.prepare(images)
    pixels = torch.from_numpy(prepared.inputs["pixels"].pixel_values)
    with torch.inference_mode():
        logits = b.model(input_ids=text["input_ids"], pixel_values=pixels).logits_per_image
    if name == "clip":
        expected = torch.softmax(logits, dim=1).numpy()
    else:
        s = torch.sigmoid(logits).numpy()
        expected = s / s.sum(axis=1, keepdims=True)
    got = np.array([[p.probs["cat"], p.probs["dog"]] for p in b.predict(prepared)])
    np.testing.assert_allclose(got, expected, atol=1e-4)


# --- detection ---------------------------------------------------------------------------------


def _check_detections(
    dets: list[list[Detection]],
    images: list[Image.Image],
    labels: frozenset[str] = frozenset({"cat", "dog", "bird"}),
) -> None:
    assert len(dets) == len(images)
    for found, img in zip(dets, images, strict=True):
        w, h = img.size
        assert [d.score for d in found] == sorted((d.score for d in found), reverse=True)
        for d in found:
            assert d.label in labels
            assert 0.0 <= d.score <= 1.0
            x0, y0, x1, y1 = d.box
            assert 0 <= x0 < x1 <= w
            assert 0 <= y0 < y1 <= h


@pytest.mark.parametrize("name", ["owlv2", "grounding-dino"])
def test_detector_outputs(
    name: str, backends: dict[str, Any], tiny: dict[str, Path], images: list[Image.Image]
) -> None:
    b = backends[name]
    assert isinstance(b, ObjectDetector)
    assert isinstance(b, Preparing)
    assert b.name == f"{name}:{tiny[name]}"
    dets = b.detect(images)
    _check_detections(dets, images)
    assert b.detect([]) == []


def test_owlv2_caps_each_class(backends: dict[str, Any], images: list[Image.Image]) -> None:
    dets = backends["owlv2"].detect(images)  # threshold 0, max_per_class 5
    assert any(dets)
    for found in dets:
        for c in ("cat", "dog", "bird"):
            assert sum(d.label == c for d in found) <= 5


def test_owlv2_fast_path_matches_the_models_forward(
    tiny: dict[str, Path], images: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Query embeddings computed once, then only the image tower and heads per batch: the same
    logits and boxes as the model's full forward pass with the text."""
    from transformers import AutoProcessor

    monkeypatch.setattr(hf_detect, "PROMPT_TEMPLATES", ("{}",))
    b = _build("owlv2", tiny["owlv2"], options={"score_threshold": 0.0, "nms_iou": 1.0})
    prepared = b.prepare(images)
    scores, boxes = b.raw(prepared)
    tok = AutoProcessor.from_pretrained(tiny["owlv2"]).tokenizer
    phrases = [class_prompts(p, ("{}",))[0] for c in CLASSES for p in c.phrases]
    assert phrases[0] == "tabby cat"  # no doubled article in "a photo of a a tabby cat."
    text = tok(phrases, padding="max_length", max_length=16, return_tensors="pt")
    pixels = torch.from_numpy(prepared.inputs["pixels"].pixel_values)
    with torch.inference_mode():
        out = b.model(
            input_ids=text["input_ids"].repeat(len(images), 1),
            attention_mask=text["attention_mask"].repeat(len(images), 1),
            pixel_values=pixels,
        )
    np.testing.assert_allclose(scores, torch.sigmoid(out.logits).numpy(), atol=1e-4)
    cx, cy, w, h = np.moveaxis(out.pred_boxes.numpy(), -1, 0)
    ref = np.stack([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2], axis=-1)
    np.testing.assert_allclose(boxes, ref, atol=1e-5)
    # every detection is one of the official post-processing's boxes (in pixels of the padded
    # square, clipped), with its score, and labelled with the class of the phrase that won
    processor = AutoProcessor.from_pretrained(tiny["owlv2"])
    sizes = [(img.height, img.width) for img in images]
    post = processor.image_processor.post_process_object_detection
    official = post(out, threshold=0.0, target_sizes=sizes)
    owner = [c.name for c in CLASSES for _ in c.phrases]
    found = b.detect(prepared)
    assert any(found)
    for dets, ref_i, img in zip(found, official, images, strict=True):
        ref_boxes = ref_i["boxes"].numpy().clip(0, [img.width, img.height] * 2)
        for d in dets:
            j = int(np.argmin(np.abs(ref_boxes - d.box).sum(axis=1)))
            np.testing.assert_allclose(ref_boxes[j], d.box, atol=1e-3)
            assert d.score == pytest.approx(float(ref_i["scores"][j]), abs=1e-4)
            assert d.label == owner[int(ref_i["labels"][j])]


def test_grounding_dino_boxes_match_the_official_post_processing(
    backends: dict[str, Any], tiny: dict[str, Path], images: list[Image.Image]
) -> None:
    from transformers import AutoProcessor

    b = backends["grounding-dino"]
    processor = AutoProcessor.from_pretrained(tiny["grounding-dino"])
    img = images[0]
    _, boxes = b.raw(b.prepare([img]))
    (prompt,) = b.prompts
    pixels = torch.from_numpy(b.prepare([img]).inputs["pixels"].pixel_values)
    with torch.inference_mode():
        out = b.model(pixel_values=pixels, **prompt.inputs)
    official = processor.post_process_grounded_object_detection(
        out, prompt.inputs["input_ids"], threshold=-1.0, target_sizes=[img.size[::-1]]
    )[0]["boxes"].numpy()
    np.testing.assert_allclose(boxes[0] * [640, 427, 640, 427], official, atol=1e-3)


def test_grounding_dino_phrase_tokens_cover_each_phrase(backends: dict[str, Any]) -> None:
    b = backends["grounding-dino"]
    (prompt,) = b.prompts
    assert prompt.phrases == list(range(6))
    ids = prompt.inputs["input_ids"][0].tolist()
    for tokens in prompt.tokens:
        assert tokens  # every phrase has tokens, none of them special
        assert not {ids[t] for t in tokens} & {101, 102, 1012}


def test_grounding_dino_splits_phrases_that_exceed_the_text_limit(tiny: dict[str, Path]) -> None:
    many = tuple(ClassQuery(f"class{i}", (f"thing number {i}",)) for i in range(8))
    b = build_backend(
        "grounding-dino", BackendConfig(classes=many, model=str(tiny["grounding-dino"]))
    )
    assert len(b.prompts) > 1  # the tiny model reads at most 64 tokens
    assert sorted(p for prompt in b.prompts for p in prompt.phrases) == list(range(8))
    assert all(prompt.inputs["input_ids"].shape[1] <= 64 for prompt in b.prompts)
    dets = b.detect([photos()[0]])
    assert dets[0]
    _check_detections(dets, [photos()[0]], frozenset(c.name for c in many))


@pytest.mark.parametrize("name", ["owlv2", "grounding-dino"])
def test_detector_boxes_are_in_original_pixels(
    name: str, tiny: dict[str, Path], images: list[Image.Image]
) -> None:
    """A photo and its copy at twice the size (each pixel repeated) shrink to the very same
    model input, so the copy's boxes must come out exactly twice as large."""
    b = _build(name, tiny[name], options={"score_threshold": 0.0, "max_per_class": 3})
    small = images[0].resize((96, 64), Image.Resampling.BILINEAR)
    large = small.resize((192, 128), Image.Resampling.NEAREST)
    np.testing.assert_array_equal(
        b.prepare([small]).inputs["pixels"].pixel_values,
        b.prepare([large]).inputs["pixels"].pixel_values,
    )
    d_small, d_large = b.detect([small, large])
    assert d_small
    assert [d.label for d in d_large] == [d.label for d in d_small]
    np.testing.assert_allclose(
        [d.box for d in d_large], [2 * np.array(d.box) for d in d_small], atol=1e-3
    )


def test_detector_batching_changes_nothing(
    backends: dict[str, Any], images: list[Image.Image]
) -> None:
    owl = backends["owlv2"]
    batched = owl.detect(images * 2)
    single = [owl.detect([img])[0] for img in images * 2]
    assert batched == single or all(
        [d.label for d in x] == [d.label for d in y]
        and np.allclose([d.box for d in x], [d.box for d in y], atol=1e-3)
        for x, y in zip(batched, single, strict=True)
    )
    # Grounding DINO pads a batch to its largest image; images of one size are unaffected
    dino = backends["grounding-dino"]
    same = [images[0], images[0].transpose(Image.Transpose.FLIP_LEFT_RIGHT)]
    batched = dino.detect(same)
    single = [dino.detect([img])[0] for img in same]
    for x, y in zip(batched, single, strict=True):
        assert [d.label for d in x] == [d.label for d in y]
        np.testing.assert_allclose([d.box for d in x], [d.box for d in y], atol=1e-3)


# --- box post-processing -------------------------------------------------------------------------


def test_boxes_keep_their_best_class_then_nms_per_class() -> None:
    boxes = np.array(
        [
            [10, 10, 50, 50],  # cat 0.9
            [12, 12, 52, 52],  # cat 0.8, overlaps the first: suppressed
            [11, 11, 51, 51],  # dog 0.7, overlaps but another class: kept
            [60, 60, 90, 90],  # cat 0.5, apart: kept
            [0, 0, 5, 5],  # under the threshold
            [-20, 10, 40, 30],  # reaches outside: clipped
            [150, 10, 190, 30],  # centre outside the 100 px image: dropped
        ],
        float,
    )
    scores = np.array(
        [[0.9, 0.1], [0.8, 0.2], [0.1, 0.7], [0.5, 0.4], [0.2, 0.1], [0.6, 0.0], [0.99, 0.0]]
    )
    found = detections(
        scores, boxes, ["cat", "dog"], (100, 80), threshold=0.3, nms_iou=0.5, max_per_class=10
    )
    assert [(d.label, d.score) for d in found] == [
        ("cat", 0.9),
        ("dog", 0.7),
        ("cat", 0.6),
        ("cat", 0.5),
    ]
    assert found[2].box == (0.0, 10.0, 40.0, 30.0)
    capped = detections(
        scores, boxes, ["cat", "dog"], (100, 80), threshold=0.3, nms_iou=0.5, max_per_class=1
    )
    assert [(d.label, d.score) for d in capped] == [("cat", 0.9), ("dog", 0.7)]
    assert detections(np.zeros((0, 2)), np.zeros((0, 4)), ["a", "b"], (9, 9), threshold=0,
                      nms_iou=0.5, max_per_class=3) == []  # fmt: skip


def test_nms_and_phrase_mapping() -> None:
    boxes = np.array([[0, 0, 10, 10], [1, 1, 11, 11], [20, 20, 30, 30]], float)
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.5, 10) == [1, 2]
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.9, 10) == [1, 2, 0]
    assert nms(boxes, np.array([0.5, 0.9, 0.7]), 0.9, 2) == [1, 2]
    # phrases 0, 1 belong to class 0, phrase 2 to class 1: a class scores its best phrase
    phrase_scores = np.array([[0.1, 0.6, 0.3], [0.2, 0.1, 0.9]])
    np.testing.assert_allclose(
        phrase_to_class(phrase_scores, [0, 0, 1], 3), [[0.6, 0.3, 0.0], [0.2, 0.9, 0.0]]
    )


# --- segmentation --------------------------------------------------------------------------------


def test_sam_masks_at_original_size(backends: dict[str, Any], images: list[Image.Image]) -> None:
    b = backends["sam"]
    assert isinstance(b, BoxSegmenter)
    boxes = [[(10.0, 10.0, 300.0, 200.0), (0.0, 0.0, 640.0, 427.0)], [], [(5.0, 5.0, 50.0, 40.0)]]
    masks = b.segment(images, boxes)
    assert [len(m) for m in masks] == [2, 0, 1]
    for found, img in zip(masks, images, strict=True):
        for m in found:
            assert m.dtype == bool
            assert m.shape == (img.height, img.width)
            np.testing.assert_array_equal(rle_to_mask(mask_to_rle(m)), m)
    assert any(m.any() for found in masks for m in found)
    single = [b.segment([img], [bx])[0] for img, bx in zip(images, boxes, strict=True)]
    for x, y in zip(masks, single, strict=True):
        for mx, my in zip(x, y, strict=True):
            assert (mx != my).mean() < 1e-3
    prepared = b.segment(b.prepare(images[:1]), boxes[:1])
    np.testing.assert_array_equal(prepared[0][0], masks[0][0])
    with pytest.raises(BackendError, match="one list"):
        b.segment(images, boxes[:2])


# --- preparation ahead of the model ----------------------------------------------------------


def test_run_overlapped_prepares_the_next_batch_during_inference() -> None:
    started = {i: threading.Event() for i in range(4)}

    def prepare(i: int) -> int:
        started[i].set()
        return i * 10

    def infer(x: int) -> int:
        i = x // 10
        if i + 1 in started:  # batch i+1 is prepared while batch i is inferred
            assert started[i + 1].wait(5)
        return x + 1

    assert list(hf.run_overlapped(range(4), prepare, infer)) == [1, 11, 21, 31]
    assert list(hf.run_overlapped([], prepare, infer)) == []


def test_run_overlapped_raises_in_order_and_stops_early() -> None:
    prepared: list[int] = []

    def prepare(i: int) -> int:
        if i == 2:
            raise OSError("unreadable")
        prepared.append(i)
        return i

    gen = hf.run_overlapped(range(5), prepare, lambda x: x)
    assert next(gen) == 0
    assert next(gen) == 1
    with pytest.raises(OSError, match="unreadable"):
        next(gen)
    slow: list[int] = []

    def prepare_slowly(i: int) -> int:
        time.sleep(0.01)
        slow.append(i)
        return i

    gen2: Iterator[int] = hf.run_overlapped(range(100), prepare_slowly, lambda x: x)
    assert next(gen2) == 0
    gen2.close()  # type: ignore[attr-defined]
    assert len(slow) < 5


def test_list_inputs_are_split_into_batches(
    backends: dict[str, Any], images: list[Image.Image]
) -> None:
    b = backends["clip"]
    calls, count = b.usage.calls, b.usage.images
    b.predict(images * 3)  # 9 images, batch_size 2
    assert b.usage.calls - calls == 5
    assert b.usage.images - count == 9


def test_a_batch_prepared_by_another_backend_is_refused(
    backends: dict[str, Any], images: list[Image.Image]
) -> None:
    prepared = backends["siglip"].prepare(images)
    with pytest.raises(BackendError, match="prepare batches with the backend"):
        backends["clip"].predict(prepared)


# --- options and devices -------------------------------------------------------------------------


def test_options_are_typed_and_checked() -> None:
    defaults = {"score_threshold": 0.2, "max_per_class": 50, "half": True}
    got = read_options(
        "owlv2", {"score_threshold": "0.4", "max_per_class": 3, "half": "no"}, defaults
    )
    assert got == {"score_threshold": 0.4, "max_per_class": 3, "half": False}
    with pytest.raises(ConfigError, match="did you mean 'score_threshold'"):
        read_options("owlv2", {"score_treshold": 0.5}, defaults)
    with pytest.raises(ConfigError, match="not a int"):
        read_options("owlv2", {"max_per_class": 2.5}, defaults)
    with pytest.raises(ConfigError, match="not a bool"):
        read_options("owlv2", {"half": "maybe"}, defaults)


def test_device_is_chosen_and_checked(tiny: dict[str, Path]) -> None:
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    if expected == "cpu" and torch.backends.mps.is_available():
        expected = "mps"
    assert pick_device(None).type == expected
    assert pick_device("cpu").type == "cpu"
    if not torch.cuda.is_available():
        with pytest.raises(BackendError, match="no CUDA GPU"):
            pick_device("cuda")
    b = _build("clip", tiny["clip"], device="cpu")
    assert b.dtype == torch.float32  # half precision only on a GPU
    assert next(b.model.parameters()).device.type == "cpu"


def test_usable_cores_follow_affinity_and_the_cgroup_quota(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(os, "sched_getaffinity", lambda pid: {0, 1, 2, 3}, raising=False)
    assert (cpu_quota(tmp_path), usable_cores(tmp_path)) == (None, 4)  # no cgroup files
    (tmp_path / "cpu.max").write_text("max 100000\n")
    assert (cpu_quota(tmp_path), usable_cores(tmp_path)) == (None, 4)  # unlimited
    (tmp_path / "cpu.max").write_text("150000 100000\n")
    assert (cpu_quota(tmp_path), usable_cores(tmp_path)) == (1.5, 2)
    (tmp_path / "cpu.max").write_text("800000 100000\n")
    assert usable_cores(tmp_path) == 4  # a quota above the affinity does not add cores
    (tmp_path / "cpu.max").unlink()
    (tmp_path / "cpu").mkdir()
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("100000\n")  # cgroup v1
    (tmp_path / "cpu" / "cpu.cfs_period_us").write_text("100000\n")
    assert (cpu_quota(tmp_path), usable_cores(tmp_path)) == (1.0, 1)
    (tmp_path / "cpu" / "cpu.cfs_quota_us").write_text("-1\n")
    assert usable_cores(tmp_path) == 4


def test_cpu_backends_choose_torch_threads_by_the_cores_they_may_use(
    tiny: dict[str, Path], monkeypatch: pytest.MonkeyPatch
) -> None:
    """By default a CPU model gets every usable core (the labelling path's preparation thread
    needs little); torch's own default is capped at the usable cores, which it does not see
    (a container's quota); the ``threads`` option decides when given."""
    before = torch.get_num_threads()
    monkeypatch.setattr(hf_base, "usable_cores", lambda root=hf_base.CGROUP: 2)
    try:
        torch.set_num_threads(8)  # as torch starts on a big host, inside a 2-core container
        assert cpu_threads(0) == 2
        _build("clip", tiny["clip"], device="cpu")
        assert torch.get_num_threads() == 2
        torch.set_num_threads(1)  # chosen by the application (these tests): kept
        _build("clip", tiny["clip"], device="cpu")
        assert torch.get_num_threads() == 1
        _build("clip", tiny["clip"], device="cpu", options={"threads": 3})
        assert torch.get_num_threads() == 3
        with pytest.raises(ConfigError, match="threads=-1 is negative"):
            _build("clip", tiny["clip"], device="cpu", options={"threads": -1})
    finally:
        torch.set_num_threads(before)


def test_thread_chooser_keeps_the_fastest_count_and_follows_the_load() -> None:
    assert ThreadChooser(2).candidates == (2, 1)
    assert ThreadChooser(8).candidates == (8, 4, 2, 1)
    assert ThreadChooser(6).candidates == (6, 3, 1)
    chooser = ThreadChooser(2, retry=8)
    assert chooser.next() == 2
    chooser.record(2, 32, 30.0)  # the warm-up batch, slow for reasons of its own: not counted
    assert chooser.rates == {}
    assert chooser.next() == 2
    chooser.record(2, 32, 4.0)  # 8 images/s: another program shares the cores
    assert chooser.next() == 1
    chooser.record(1, 32, 2.0)  # 16 images/s
    assert chooser.next() == 1
    for _ in range(3):  # the load changes: one thread now gets 4 images/s
        chooser.record(1, 32, 8.0)
    assert chooser.rates[1] < chooser.rates[2]
    assert chooser.next() == 2  # the count that has become faster
    chooser.record(2, 32, 4.0)
    chooser.record(2, 32, 4.0)  # the eighth batch: every count is tried afresh
    assert chooser.rates == {}
    assert chooser.next() == 2
    chooser.record(2, 32, 1.0)
    assert chooser.next() == 1


def test_fewer_threads_are_tried_only_when_other_work_shares_the_cores() -> None:
    chooser = ThreadChooser(2, retry=8)
    chooser.record(2, 32, 2.0, others=0.0)  # warm-up
    chooser.record(2, 32, 2.0, others=0.1)  # 16 images/s, the cores to ourselves
    assert chooser.next() == 2
    chooser.record(2, 32, 2.0, others=0.1)
    assert chooser.next() == 2
    assert set(chooser.rates) == {2}
    chooser.record(2, 32, 8.0, others=1.6)  # another program arrives: 2 threads slow down
    assert chooser.next() == 1  # now one thread is worth a try
    chooser.record(1, 32, 2.5, others=1.0)  # 12.8 images/s against 2 threads' 10 (averaged)
    assert chooser.next() == 1  # and it was faster


def test_the_cpu_of_other_processes_is_the_machines_busy_time_less_ours(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    stat = tmp_path / "stat"
    tick = os.sysconf("SC_CLK_TCK")
    mine = os.times()
    ours = mine.user + mine.system

    def write(busy_seconds: float, idle_seconds: float) -> None:
        user = round(busy_seconds * tick)
        stat.write_text(f"cpu  {user} 0 0 {round(idle_seconds * tick)} 0 0 0 0 0 0\ncpu0 1 2\n")

    monkeypatch.setattr(hf_base, "usable_cores", lambda root=hf_base.CGROUP: os.cpu_count())
    write(1000.0 + ours, 50.0)
    stopwatch = hf_base.others_busy(stat)
    assert stopwatch is not None
    write(1003.0 + ours, 51.0)  # the machine was busy 3 s more, none of it ours
    assert stopwatch() == pytest.approx(3.0, abs=0.2)
    monkeypatch.setattr(hf_base, "usable_cores", lambda root=hf_base.CGROUP: 1)
    assert hf_base.others_busy(stat) is None or os.cpu_count() == 1  # a share of a bigger machine
    assert hf_base.others_busy(tmp_path / "missing") is None or os.cpu_count() == 1


def test_a_cpu_backend_times_its_batches_at_each_thread_count(
    tiny: dict[str, Path], images: list[Image.Image], monkeypatch: pytest.MonkeyPatch
) -> None:
    before = torch.get_num_threads()
    monkeypatch.setattr(hf_base, "usable_cores", lambda root=hf_base.CGROUP: 2)
    try:
        torch.set_num_threads(2)
        b = _build("clip", tiny["clip"], device="cpu", batch_size=1)
        assert b.threads is not None
        monkeypatch.setattr(hf_base, "others_busy", lambda: lambda: 10.0)  # a busy machine
        b.predict(images)  # three batches of one: warm-up, 2 threads, 1 thread
        assert set(b.threads.rates) == {1, 2}
        torch.set_num_threads(2)  # the busy run ended on one thread
        idle = _build("clip", tiny["clip"], device="cpu", batch_size=1)
        assert idle.threads is not None
        monkeypatch.setattr(hf_base, "others_busy", lambda: lambda: 0.0)  # nothing else runs
        idle.predict(images)
        assert set(idle.threads.rates) == {2}  # no batch spent at half the threads
        fixed = _build("clip", tiny["clip"], device="cpu", options={"threads": 2})
        assert fixed.threads is None  # the option decides
    finally:
        torch.set_num_threads(before)


@pytest.mark.gpu
def test_gpu_runs_in_half_precision_and_agrees_with_the_cpu(
    tiny: dict[str, Path], images: list[Image.Image]
) -> None:
    gpu = _build("clip", tiny["clip"], device="cuda")
    cpu = _build("clip", tiny["clip"], device="cpu")
    assert gpu.dtype == torch.float16
    np.testing.assert_allclose(gpu.embed(images), cpu.embed(images), atol=2e-2)
    owl = _build("owlv2", tiny["owlv2"], device="cuda", options={"score_threshold": 0.0})
    _check_detections(owl.detect(images), images)
    sam = _build("sam", tiny["sam"], device="cuda")
    assert sam.segment(images[:1], [[(10.0, 10.0, 300.0, 200.0)]])[0][0].shape == (427, 640)


# --- weights, errors, check ------------------------------------------------------------------


@pytest.fixture
def empty_cache(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """A fresh Hugging Face cache with downloads off (huggingface_hub reads its environment
    once, at import, so its constants are patched as well as the environment)."""
    from huggingface_hub import constants

    hub = tmp_path / "hub"
    hub.mkdir()
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(constants, "HF_HUB_CACHE", str(hub))
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", True)
    return hub


def _cache_repo(hub: Path, repo: str, files: Path | dict[str, bytes]) -> None:
    """Lay out ``repo`` in the cache the way a download does: snapshots/<rev>/ and refs/main."""
    base = hub / f"models--{repo.replace('/', '--')}"
    snapshot = base / "snapshots" / "0123abcd"
    snapshot.mkdir(parents=True)
    (base / "refs").mkdir()
    (base / "refs" / "main").write_text("0123abcd")
    if isinstance(files, Path):
        for f in files.iterdir():
            (snapshot / f.name).write_bytes(f.read_bytes())
    else:
        for name, data in files.items():
            (snapshot / name).write_bytes(data)


def test_offline_without_weights_names_the_fix(tmp_path: Path) -> None:
    """As a user meets it: a fresh process, HF_HUB_OFFLINE=1, an empty cache."""
    code = (
        "from datasetagent.models import build_backend, BackendConfig, ClassQuery\n"
        "from datasetagent.errors import BackendError\n"
        "try:\n"
        "    build_backend('clip', BackendConfig(classes=(ClassQuery('cat', ('cat',)),)))\n"
        "except BackendError as exc:\n"
        "    print(exc)\n"
    )
    env = {**os.environ, "HF_HOME": str(tmp_path), "HF_HUB_OFFLINE": "1"}
    env.pop("HF_HUB_CACHE", None)
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True
    )
    message = out.stdout.strip()
    assert "\n" not in message
    assert "openai/clip-vit-base-patch32" in message
    assert "datasetagent models pull openai/clip-vit-base-patch32" in message


def test_a_cached_hub_id_loads_through_the_same_path(
    empty_cache: Path, tiny: dict[str, Path], images: list[Image.Image]
) -> None:
    _cache_repo(empty_cache, "someone/tiny-clip", tiny["clip"])
    b = build_backend("clip", BackendConfig(classes=CLASSES, model="someone/tiny-clip"))
    assert b.name == "clip:someone/tiny-clip"
    assert len(b.predict(images)) == 3
    checks = {str(row["backend"]): row for row in hf.check({"clip": "someone/tiny-clip"})}
    assert set(checks) == set(hf.DEFAULT_MODELS)
    assert checks["clip"]["ready"] is True
    assert checks["clip"]["detail"] == "ready"
    assert checks["sam"]["cached"] is False
    assert checks["sam"]["libraries"] is True
    assert checks["sam"]["ready"] is False
    pull_sam = f"datasetagent models pull {hf.DEFAULT_MODELS['sam']}"
    assert checks["sam"]["detail"] == f"weights not downloaded: {pull_sam}"


def test_broken_or_missing_weights_are_one_line_errors(empty_cache: Path, tmp_path: Path) -> None:
    _cache_repo(empty_cache, "someone/broken", {"config.json": b"{not json"})
    with pytest.raises(BackendError, match="cannot load") as info:
        build_backend("clip", BackendConfig(classes=CLASSES, model="someone/broken"))
    assert "datasetagent models pull someone/broken" in str(info.value)
    assert "\n" not in str(info.value)
    with pytest.raises(BackendError, match="not an existing folder"):
        build_backend("clip", BackendConfig(classes=CLASSES, model=str(tmp_path / "nowhere")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(BackendError, match="cannot load"):
        build_backend("sam", BackendConfig(classes=CLASSES, model=str(tmp_path / "empty")))


def test_pull_resolves_names_and_refuses_offline(empty_cache: Path, tmp_path: Path) -> None:
    assert hf.pull(str(tmp_path)) == tmp_path  # a folder is already local
    with pytest.raises(BackendError, match="HF_HUB_OFFLINE") as info:
        hf.pull("owlv2")
    assert hf.DEFAULT_MODELS["owlv2"] in str(info.value)
    with pytest.raises(BackendError, match="'org/x'"):
        hf.pull("clip:org/x")
    with pytest.raises(BackendError, match="neither a labeler"):
        hf.pull("no such thing")


def test_missing_vision_extra_names_the_install(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(sys.modules, "transformers", None)
    with pytest.raises(BackendError, match=r"pip install 'datasetagent\[vision\]'"):
        build_backend("owlv2", BackendConfig(classes=CLASSES))


def test_a_classifier_needs_classes(tiny: dict[str, Path]) -> None:
    with pytest.raises(BackendError, match="at least one class"):
        build_backend("clip", BackendConfig(classes=(), model=str(tiny["clip"])))
    with pytest.raises(ConfigError, match="unknown owlv2 option"):
        _build("owlv2", tiny["owlv2"], options={"nms": 0.3})


def test_saved_tiny_models_are_small(tiny: dict[str, Path]) -> None:
    for folder in tiny.values():
        assert sum(f.stat().st_size for f in folder.iterdir()) < 1_000_000
        assert json.loads((folder / "config.json").read_text())["model_type"]


def test_a_checkpoint_of_the_wrong_kind_is_named(tiny: dict[str, Path]) -> None:
    with pytest.raises(BackendError, match="not a CLIP-style"):
        _build("clip", tiny["sam"])
    with pytest.raises(BackendError, match="is a clip checkpoint, not owlv2"):
        _build("owlv2", tiny["clip"])
    with pytest.raises(BackendError, match="is a owlv2 checkpoint, not sam"):
        _build("sam", tiny["owlv2"])
    with pytest.raises(BackendError, match="not grounding-dino"):
        _build("grounding-dino", tiny["sam"])
