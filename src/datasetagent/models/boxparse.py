"""Parse an MLLM's box reply into detections: pure string → data functions.

Grounding models are asked for Qwen-VL-style JSON, ``[{"bbox_2d": [x0, y0, x1, y1], "label":
"cat"}]``, and answer in many near variants: inside a fenced ```json block, with prose before
or after, with Python's single quotes, under ``bbox``/``box`` keys, wrapped in an object, or cut
off mid-list at the token limit. Everything here accepts those variants and never raises on a
malformed reply: what cannot be read is dropped and counted, so the caller can log it or ask
again.

Coordinates come in three conventions, all relative to the image that was *sent* (resized):
pixels (Qwen2.5-VL), fractions 0–1, or Qwen2-VL's / Qwen3-VL's 0–1000 grid. ``auto`` chooses
per reply, one convention for every box in it:

1. every coordinate within [0, 1] → fractions (a pixel box that small would be degenerate);
2. otherwise, any x beyond the sent width or y beyond the sent height (1% slack), with every
   coordinate within [0, 1000] → the 0–1000 grid, since pixels cannot lie outside the image;
3. any coordinate above 1000 that fits the sent image → pixels;
4. otherwise the reply fits both pixels and the grid: pixels, unless earlier replies of the
   same model proved its convention (``proven_coords``; the MLLM backend remembers it per
   model and reads a whole batch after its proofs), so a 0–1000 model is read right even in
   replies whose boxes all happen to fit inside the sent image.

For a model with a known convention, set it explicitly (``box_coords`` option).
"""

from __future__ import annotations

import ast
import json
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Literal

from datasetagent.models import Detection

Coords = Literal["auto", "pixel", "norm1", "norm1000"]
COORDS: tuple[Coords, ...] = ("auto", "pixel", "norm1", "norm1000")

#: Keys holding ``[x0, y0, x1, y1]``, in order of preference.
XYXY_KEYS = ("bbox_2d", "bbox", "box")
#: Keys holding ``[x, y, width, height]``: a box is read that way only when its key says so.
XYWH_KEYS = ("bbox_xywh", "box_xywh", "xywh")
LABEL_KEYS = ("label", "class", "name", "category")
SCORE_KEYS = ("confidence", "score", "prob")

#: Slack for rule 2 of ``auto``: a pixel box may overshoot the image edge by this share.
_EDGE_SLACK = 1.01
_FENCE = re.compile(r"```[a-zA-Z]*\s*\n?(.*?)```", re.DOTALL)
_ARTICLE = re.compile(r"^(a|an|the)\s+")


@dataclass(frozen=True)
class RawBox:
    """One box as the reply gave it: ``xyxy`` in the reply's own coordinates."""

    label: str
    xyxy: tuple[float, float, float, float]
    score: float | None = None


@dataclass(frozen=True)
class Extracted:
    """What a reply held: its boxes and how many entries could not be read as boxes.

    ``found_json`` is False when the reply held no JSON value at all (prose only), the one case
    worth asking the model again.
    """

    boxes: tuple[RawBox, ...]
    malformed: int
    found_json: bool


@dataclass(frozen=True)
class ParsedBoxes:
    """Detections in pixels of the original image, and how many reply entries were dropped
    (malformed, degenerate after clipping, or a label that is not a class)."""

    detections: tuple[Detection, ...]
    dropped: int


def normalise_label(text: str) -> str:
    """Lower case, ``_``/``-`` as spaces, no leading article: ``"The Tabby_Cat"`` → ``"tabby cat"``.

    Models paraphrase class names; comparing normalised forms accepts harmless variants without
    accepting a different class.
    """
    s = re.sub(r"[\s_\-]+", " ", text.strip().lower()).strip(" .")
    return _ARTICLE.sub("", s)


def label_aliases(classes: Mapping[str, Sequence[str]]) -> dict[str, str]:
    """Normalised name and phrases → class name, for ``{class name: phrases}``.

    A phrase shared by two classes goes to the first, so every alias names one class.
    """
    out: dict[str, str] = {}
    for name in classes:
        out.setdefault(normalise_label(name), name)
    for name, phrases in classes.items():
        for phrase in phrases:
            out.setdefault(normalise_label(phrase), name)
    return out


def _balanced_end(text: str, start: int) -> int | None:
    """Index just past the bracket that closes the one at ``start``, skipping quoted strings
    (single or double quotes); None when the text ends first (a truncated reply)."""
    closing = {"[": "]", "{": "}"}
    stack = [closing[text[start]]]
    quote: str | None = None
    i = start + 1
    while i < len(text):
        ch = text[i]
        if quote:
            if ch == "\\":
                i += 1
            elif ch == quote:
                quote = None
        elif ch in "\"'":
            quote = ch
        elif ch in closing:
            stack.append(closing[ch])
        elif ch in "]}":
            if ch != stack.pop():
                return None
            if not stack:
                return i + 1
        i += 1
    return None


def _load(fragment: str) -> Any:
    """JSON, else a Python literal (single quotes, True/None); None when neither parses."""
    try:
        return json.loads(fragment)
    except ValueError:
        pass
    try:
        return ast.literal_eval(fragment)
    except (ValueError, SyntaxError, TypeError, MemoryError, RecursionError):
        return None


def _values(text: str) -> Iterator[Any]:
    """JSON-like values in ``text``: those of its fenced blocks when any parses, else each
    bracketed span; from a truncated list, the complete objects inside it."""
    fenced = [v for block in _FENCE.findall(text) if (v := _load(block.strip())) is not None]
    if fenced:
        yield from fenced
        return
    i = 0
    while i < len(text):
        if text[i] not in "[{":
            i += 1
            continue
        end = _balanced_end(text, i)
        if end is not None:
            value = _load(text[i:end])
            if value is not None:
                yield value
                i = end
                continue
        i += 1


def _entries(value: Any) -> list[Any] | None:
    """The list of box entries in a parsed value: the list itself, an object's list value
    (``{"objects": [...]}``), or a single box object. A non-empty list with no object in it
    (a lone ``[x0, y0, x1, y1]``) holds no entries."""
    if isinstance(value, list):
        return value if not value or any(isinstance(v, dict) for v in value) else None
    if isinstance(value, dict):
        if any(k in value for k in (*XYXY_KEYS, *XYWH_KEYS)):
            return [value]
        for v in value.values():
            if isinstance(v, list) and (not v or isinstance(v[0], dict)):
                return v
    return None


def _number(x: Any) -> float | None:
    if isinstance(x, bool):
        return None
    try:
        v = float(x)
    except (TypeError, ValueError):
        return None
    return v if v == v and abs(v) != float("inf") else None


def _raw_box(entry: Any) -> RawBox | None:
    if not isinstance(entry, dict):
        return None
    label = next((entry[k] for k in LABEL_KEYS if isinstance(entry.get(k), str)), None)
    key = next((k for k in (*XYXY_KEYS, *XYWH_KEYS) if k in entry), None)
    if label is None or key is None:
        return None
    coords = entry[key]
    if isinstance(coords, list) and len(coords) == 1 and isinstance(coords[0], list):
        coords = coords[0]
    if not isinstance(coords, list | tuple) or len(coords) != 4:
        return None
    nums = [_number(c) for c in coords]
    if any(n is None for n in nums):
        return None
    x0, y0, a, b = (float(n) for n in nums if n is not None)
    x1, y1 = (x0 + a, y0 + b) if key in XYWH_KEYS else (a, b)
    score = next((s for k in SCORE_KEYS if (s := _number(entry.get(k))) is not None), None)
    return RawBox(label, (x0, y0, x1, y1), score)


def extract_boxes(text: str) -> Extracted:
    """Read every box entry of a reply; never raises.

    The first JSON-like value that holds a list of entries wins; a reply with several loose
    objects (one per line, or a list cut off at the token limit) gives each complete object.
    """
    found = False
    loose: list[Any] = []
    for value in _values(text):
        found = True
        entries = _entries(value)
        if entries is None:
            if isinstance(value, dict):  # an object that is no box, e.g. {"note": "none"}
                loose.append(value)
        elif isinstance(value, list) or len(entries) != 1 or entries[0] is not value:
            boxes = [b for b in map(_raw_box, entries) if b is not None]
            return Extracted(tuple(boxes), len(entries) - len(boxes), True)
        else:  # a single box object: collect every one in the reply
            loose.extend(entries)
    boxes = [b for b in map(_raw_box, loose) if b is not None]
    return Extracted(tuple(boxes), len(loose) - len(boxes), found)


def proven_coords(boxes: Sequence[RawBox], sent_size: tuple[int, int]) -> Coords | None:
    """The convention a reply's boxes prove on their own (rules 1-3 of the module docstring),
    or None when they fit both pixels and the 0–1000 grid."""
    values = [v for b in boxes for v in b.xyxy]
    if not values:
        return None
    if all(0.0 <= v <= 1.0 for v in values):
        return "norm1"
    w, h = sent_size
    beyond = any(
        max(b.xyxy[0], b.xyxy[2]) > w * _EDGE_SLACK or max(b.xyxy[1], b.xyxy[3]) > h * _EDGE_SLACK
        for b in boxes
    )
    if beyond and all(0.0 <= v <= 1000.0 for v in values):
        return "norm1000"
    if not beyond and any(v > 1000.0 for v in values):
        return "pixel"
    return None


def resolve_coords(
    boxes: Sequence[RawBox], sent_size: tuple[int, int], fallback: Coords = "pixel"
) -> Coords:
    """The convention ``auto`` reads one reply's ``boxes`` in: what they prove, else
    ``fallback`` (what the model's earlier replies proved, or pixels)."""
    return proven_coords(boxes, sent_size) or fallback


@dataclass(frozen=True)
class ReplyFrame:
    """How to read one reply's boxes: the (width, height) of the image the model saw and of the
    original, the class aliases (see ``label_aliases``), the coordinate convention, and the
    score of a box the model gave no confidence for."""

    aliases: Mapping[str, str]
    sent_size: tuple[int, int]
    image_size: tuple[int, int]
    coords: Coords = "auto"
    default_score: float = 1.0
    #: What ``auto`` reads a reply in that proves nothing (``resolve_coords``).
    fallback: Coords = "pixel"


def to_detections(boxes: Sequence[RawBox], frame: ReplyFrame) -> ParsedBoxes:
    """Map reply boxes to detections in pixels of the original image.

    Boxes are put in corner order, clipped to the image, and dropped when their label is not a
    class or when less than a pixel wide or high is left.
    """
    coords = frame.coords
    mode = resolve_coords(boxes, frame.sent_size, frame.fallback) if coords == "auto" else coords
    w, h = float(frame.image_size[0]), float(frame.image_size[1])
    if mode == "pixel":
        sx, sy = w / max(frame.sent_size[0], 1), h / max(frame.sent_size[1], 1)
    elif mode == "norm1":
        sx, sy = w, h
    else:
        sx, sy = w / 1000.0, h / 1000.0
    out: list[Detection] = []
    for box in boxes:
        label = frame.aliases.get(normalise_label(box.label))
        x0, y0, x1, y1 = box.xyxy
        # to a thousandth of a pixel: a value such as 2e-38 would make the 1-pixel check and
        # the box disagree (x1 - x0 rounds to 1.0 while x0 > x1 - 1)
        x0, x1 = sorted(round(min(max(v * sx, 0.0), w), 3) for v in (x0, x1))
        y0, y1 = sorted(round(min(max(v * sy, 0.0), h), 3) for v in (y0, y1))
        if label is None or x1 - x0 < 1.0 or y1 - y0 < 1.0:
            continue
        score = frame.default_score if box.score is None else min(max(box.score, 0.0), 1.0)
        out.append(Detection(label=label, score=score, box=(x0, y0, x1, y1)))
    return ParsedBoxes(tuple(out), len(boxes) - len(out))


def parse_boxes(text: str, frame: ReplyFrame) -> ParsedBoxes:
    """``extract_boxes`` then ``to_detections``: a reply straight to detections, with the
    entries that could not be read counted as dropped."""
    extracted = extract_boxes(text)
    parsed = to_detections(extracted.boxes, frame)
    return ParsedBoxes(parsed.detections, parsed.dropped + extracted.malformed)
