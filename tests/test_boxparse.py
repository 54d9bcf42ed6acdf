"""Table tests for the MLLM box-reply parser: raw model outputs → detections."""

from __future__ import annotations

import pytest
from hypothesis import example, given
from hypothesis import strategies as st

from datasetagent.models.boxparse import (
    RawBox,
    ReplyFrame,
    extract_boxes,
    label_aliases,
    normalise_label,
    parse_boxes,
    proven_coords,
    resolve_coords,
    to_detections,
)

ALIASES = label_aliases({"cat": ["a photo of a cat", "kitty"], "traffic_light": ["stoplight"]})
#: The model saw a 400x200 image; the original was 800x400, so pixel boxes scale by 2.
SENT = (400, 200)
ORIG = (800, 400)
FRAME = ReplyFrame(ALIASES, SENT, ORIG)


def parse(text: str, coords: str = "auto") -> tuple[list[tuple[str, tuple[float, ...]]], int]:
    parsed = parse_boxes(text, ReplyFrame(ALIASES, SENT, ORIG, coords))  # type: ignore[arg-type]
    return [(d.label, tuple(round(v, 3) for v in d.box)) for d in parsed.detections], parsed.dropped


CAT = ("cat", (20.0, 40.0, 200.0, 240.0))


@pytest.mark.parametrize(
    ("reply", "expected", "dropped"),
    [
        # Qwen2.5-VL's own format, fenced, with prose around it
        (
            'Here you go:\n```json\n[{"bbox_2d": [10, 20, 100, 120], "label": "cat"}]\n```\nDone.',
            [CAT],
            0,
        ),
        # bare JSON with trailing prose
        ('[{"bbox_2d": [10, 20, 100, 120], "label": "cat"}] I found one cat.', [CAT], 0),
        # single quotes (a Python literal)
        ("[{'bbox': [10, 20, 100, 120], 'label': 'cat'}]", [CAT], 0),
        # `box` key, a label variant and a phrase of the class
        ('[{"box": [10, 20, 100, 120], "label": "Cat"}]', [CAT], 0),
        ('[{"bbox_2d": [10, 20, 100, 120], "label": "kitty"}]', [CAT], 0),
        (
            '[{"bbox_2d": [0, 0, 10, 10], "label": "Traffic light"}]',
            [("traffic_light", (0.0, 0.0, 20.0, 20.0))],
            0,
        ),
        # x, y, w, h only when the key says so
        ('[{"bbox_xywh": [10, 20, 90, 100], "label": "cat"}]', [CAT], 0),
        # wrapped in an object
        ('{"objects": [{"bbox_2d": [10, 20, 100, 120], "label": "cat"}]}', [CAT], 0),
        # a single object, not in a list
        ('{"bbox_2d": [10, 20, 100, 120], "label": "cat"}', [CAT], 0),
        # numbers as strings, corners swapped
        ('[{"bbox_2d": ["100", "120", "10", "20"], "label": "cat"}]', [CAT], 0),
        # cut off at the token limit: the complete entry is kept
        ('[{"bbox_2d": [10, 20, 100, 120], "label": "cat"}, {"bbox_2d": [5, 6,', [CAT], 0),
        # outside the image (negative, so not the 0-1000 grid): pixels, clipped to it
        (
            '[{"bbox_2d": [-30, -5, 100, 500], "label": "cat"}]',
            [("cat", (0.0, 0.0, 200.0, 400.0))],
            0,
        ),
        # labels that are not classes, degenerate boxes and junk entries are dropped, counted
        (
            '[{"bbox_2d": [10, 20, 100, 120], "label": "dog"},'
            ' {"bbox_2d": [10, 20, 10, 120], "label": "cat"},'
            ' {"bbox_2d": [10, 20, 100], "label": "cat"},'
            ' {"bbox_2d": [1, 2, 3, "x"], "label": "cat"},'
            ' {"label": "cat"}, "cat", 7,'
            ' {"bbox_2d": [10, 20, 100, 120], "label": "cat"}]',
            [CAT],
            7,
        ),
        # empty answers and replies with nothing to read: no boxes, no exception
        ("[]", [], 0),
        ("```json\n[]\n```", [], 0),
        ('{"objects": []}', [], 0),
        ("", [], 0),
        ("I can't see any cats in this picture.", [], 0),
        ('[{"bbox_2d": [10, 20, 100, 120], "label": "cat"', [], 0),
        ("[[[[[[[[[[[[[[", [], 0),
        ("}{][", [], 0),
        ('[{"bbox_2d": null, "label": "cat"}]', [], 1),
        ('[{"bbox_2d": [10, 20, 100, 120], "label": null}]', [], 1),
        ('[{"bbox_2d": [NaN, 20, 100, 120], "label": "cat"}]', [], 1),
    ],
)
def test_parse_table(reply: str, expected: list[object], dropped: int) -> None:
    assert parse(reply) == (expected, dropped)


@pytest.mark.parametrize(
    ("reply", "coords", "box"),
    [
        # fractions 0..1 (auto: every value within [0, 1])
        (
            '[{"bbox_2d": [0.1, 0.25, 0.5, 0.75], "label": "cat"}]',
            "auto",
            (80.0, 100.0, 400.0, 300.0),
        ),
        # Qwen2-VL's 0-1000 grid (auto: beyond the 400x200 sent image, all in [0, 1000])
        (
            '[{"bbox_2d": [100, 250, 500, 750], "label": "cat"}]',
            "auto",
            (80.0, 100.0, 400.0, 300.0),
        ),
        # pixels of the sent image, scaled back to the original
        ('[{"bbox_2d": [40, 50, 200, 150], "label": "cat"}]', "auto", (80.0, 100.0, 400.0, 300.0)),
        # the same numbers read under an explicit convention
        (
            '[{"bbox_2d": [40, 50, 200, 150], "label": "cat"}]',
            "norm1000",
            (32.0, 20.0, 160.0, 60.0),
        ),
        (
            '[{"bbox_2d": [0.5, 0.5, 100, 75], "label": "cat"}]',
            "pixel",
            (1.0, 1.0, 200.0, 150.0),
        ),
        (
            '[{"bbox_2d": [0.1, 0.25, 0.5, 0.75], "label": "cat"}]',
            "norm1",
            (80.0, 100.0, 400.0, 300.0),
        ),
        # beyond the image and beyond 1000: pixels, clipped
        (
            '[{"bbox_2d": [300, 100, 1200, 180], "label": "cat"}]',
            "auto",
            (600.0, 200.0, 800.0, 360.0),
        ),
    ],
)
def test_coordinate_conventions(reply: str, coords: str, box: tuple[float, ...]) -> None:
    assert parse(reply, coords) == ([("cat", box)], 0)


def test_auto_decides_once_per_reply() -> None:
    """One box beyond the sent image puts every box of the reply on the 0-1000 grid."""
    boxes = [RawBox("cat", (10, 10, 50, 50)), RawBox("cat", (500, 500, 900, 900))]
    assert resolve_coords(boxes, SENT) == "norm1000"
    assert resolve_coords(boxes[:1], SENT) == "pixel"
    assert resolve_coords([], SENT) == "pixel"


@pytest.mark.parametrize(
    ("xyxy", "size", "proven"),
    [
        ((0.1, 0.2, 0.5, 0.9), (800, 600), "norm1"),
        ((100, 100, 700, 500), (640, 480), "norm1000"),  # beyond the image, within the grid
        ((100, 100, 1200, 900), (1280, 960), "pixel"),  # past the grid, inside the image
        ((100, 100, 500, 400), (640, 480), None),  # fits both
        ((100, 100, 1200, 500), (640, 480), None),  # fits neither: proves nothing
    ],
)
def test_what_one_reply_proves(
    xyxy: tuple[float, float, float, float], size: tuple[int, int], proven: str | None
) -> None:
    assert proven_coords([RawBox("cat", xyxy)], size) == proven
    # what the model's earlier replies proved reads only a reply that proves nothing itself
    assert resolve_coords([RawBox("cat", xyxy)], size, "norm1000") == (proven or "norm1000")


def test_scores_are_read_clipped_or_defaulted() -> None:
    boxes = [
        RawBox("cat", (0, 0, 10, 10), 0.7),
        RawBox("cat", (0, 0, 10, 10), 3.0),
        RawBox("cat", (0, 0, 10, 10), None),
    ]
    parsed = to_detections(boxes, ReplyFrame(ALIASES, SENT, ORIG, default_score=0.25))
    assert [d.score for d in parsed.detections] == [0.7, 1.0, 0.25]
    text = '[{"bbox_2d": [1, 2, 30, 40], "label": "cat", "score": "0.4"}]'
    assert extract_boxes(text).boxes[0].score == pytest.approx(0.4)


def test_extract_reports_whether_any_json_was_found() -> None:
    """Only a reply with no JSON at all is worth asking again for."""
    assert not extract_boxes("No objects found.").found_json
    assert extract_boxes("[]").found_json
    assert extract_boxes('{"note": "nothing"}').found_json
    assert extract_boxes('{"note": "nothing"}').malformed == 1


def test_normalise_label() -> None:
    assert normalise_label("  The Traffic_Light. ") == "traffic light"
    assert normalise_label("an apple") == "apple"
    assert ALIASES["stoplight"] == "traffic_light"


def test_a_phrase_shared_by_two_classes_goes_to_the_first() -> None:
    table = label_aliases({"cat": ["pet"], "dog": ["pet", "dog"]})
    assert table["pet"] == "cat"
    assert table["dog"] == "dog"


@given(st.text(max_size=300))
def test_never_raises_and_boxes_stay_inside(text: str) -> None:
    parsed = parse_boxes(text, FRAME)
    for d in parsed.detections:
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 < x1 <= ORIG[0]
        assert 0 <= y0 < y1 <= ORIG[1]


@given(
    st.lists(
        st.tuples(
            st.sampled_from(["cat", "dog", "kitty"]),
            st.lists(st.floats(-2000, 2000, allow_nan=False), min_size=4, max_size=4),
        ),
        max_size=6,
    )
)
@example([("cat", [2.35e-38, 0.0, 0.00125, 0.0025])])  # a 1-pixel box from a denormal corner
def test_generated_replies_give_valid_detections(entries: list[tuple[str, list[float]]]) -> None:
    import json

    text = json.dumps([{"bbox_2d": coords, "label": label} for label, coords in entries])
    parsed = parse_boxes(text, FRAME)
    assert len(parsed.detections) + parsed.dropped == len(entries)
    for d in parsed.detections:
        assert d.label == "cat"
        x0, y0, x1, y1 = d.box
        assert 0 <= x0 <= x1 - 1 <= ORIG[0] - 1
        assert 0 <= y0 <= y1 - 1 <= ORIG[1] - 1
