"""The review app in real headless Chromium (tests/browser.py): a person accepts, rejects,
relabels by number key and bulk-accepts a filtered group, by keyboard; then a fresh
``datasetagent export`` reflects every decision. Screenshots go to test-artifacts/."""

from __future__ import annotations

import json
import subprocess
import sys
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest

from browser import BrowserPage, browser_page  # noqa: F401 (the fixture)
from datasetagent.review_app import bind
from datasetagent.review_app.session import ReviewSession
from test_review_app import HELD, built_run, run  # noqa: F401 (fixtures)

CLASSES = ("0", "1", "2", "3")


@contextmanager
def serving(session: ReviewSession) -> Iterator[str]:
    """``session``'s review app served by uvicorn on a free loopback port; its URL."""
    import uvicorn

    from datasetagent.review_app.app import create_app

    sock = bind("127.0.0.1", 0)
    port = sock.getsockname()[1]
    app = create_app(session, "127.0.0.1", port)
    server = uvicorn.Server(uvicorn.Config(app, log_level="warning", lifespan="off"))
    thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/"
    finally:
        server.should_exit = True
        thread.join(timeout=10)
        sock.close()


@pytest.fixture
def served(run: Path) -> Iterator[str]:  # noqa: F811
    with serving(ReviewSession(run, audit_size=5)) as url:
        yield url


def _current(bp: BrowserPage) -> tuple[str, str]:
    """The id and shown class of the item on screen."""
    item = bp.page.evaluate("() => state.items[state.pos]")
    return item["id"], item["label"]


def _press(bp: BrowserPage, key: str, says: str) -> None:
    """Press ``key`` and wait until the status line says ``says`` (the decision is stored)."""
    bp.page.keyboard.press(key)
    bp.page.wait_for_function(
        "(text) => document.getElementById('status').textContent.startsWith(text)", arg=says
    )


def test_keyboard_decisions_and_a_bulk_accept_reach_the_next_export(
    browser_page: BrowserPage,  # noqa: F811
    served: str,
    run: Path,  # noqa: F811
    tmp_path: Path,
) -> None:
    bp = browser_page
    page = bp.page
    page.goto(served)
    page.wait_for_selector("body[data-ready='1']")
    assert page.locator("#queue li").count() == len(HELD) + 5
    page.wait_for_function("() => document.getElementById('image').naturalWidth > 0")
    bp.screenshot("1-queue")

    accepted, accepted_label = _current(bp)
    _press(bp, "a", "accept")
    rejected, _ = _current(bp)
    assert rejected != accepted
    _press(bp, "r", "reject")
    relabelled, shown = _current(bp)
    new = next(c for c in CLASSES if c != shown)
    _press(bp, str(CLASSES.index(new) + 1), f"relabel {new}")
    bp.screenshot("2-after-keys")
    assert page.locator("#queue li").count() == len(HELD) + 5 - 3

    # bulk: the held-back "low confidence" group left (two of HELD's four: the queue asks the
    # least certain first) above a threshold between them (the disputed ones and the audit
    # items are outside the group)
    page.fill("#f-reason", "low confidence")
    page.dispatch_event("#f-reason", "change")
    page.wait_for_function("() => state.items.every((i) => i.reason === 'low confidence')")
    group = page.evaluate("() => state.items.map((i) => [i.id, i.confidence, i.label])")
    assert len(group) == 2
    low, high = sorted(conf for _, conf, _ in group)
    threshold = round((low + high) / 2, 3)
    bulk = [(i, label) for i, conf, label in group if conf >= threshold]
    assert len(bulk) == 1
    page.fill("#bulk-min", str(threshold))
    page.locator("body").click(position={"x": 5, "y": 5})
    _press(bp, "b", "bulk accepted 1")
    progress = page.inner_text("#decided")
    assert progress.startswith("4 decision(s) this session")
    bp.screenshot("3-after-bulk")
    bp.assert_clean()

    out = tmp_path / "export"
    done = subprocess.run(
        [sys.executable, "-m", "datasetagent", "export", str(run), "-o", str(out)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    lines = [json.loads(x) for x in (out / "manifest.jsonl").read_text().splitlines()]
    exported = {x["id"]: x["labels"] for x in lines}
    assert exported[accepted][0]["label"] == accepted_label
    assert exported[accepted][0]["labeler"] == "human"
    assert rejected not in exported
    assert exported[relabelled][0]["label"] == new
    assert exported[relabelled][0]["labeler"] == "human"
    for sid, label in bulk:
        assert exported[sid][0]["label"] == label
        assert exported[sid][0]["labeler"] == "human"


def test_boxes_are_drawn_and_edited_by_keyboard(
    browser_page: BrowserPage,  # noqa: F811
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from datasetagent.models import BACKENDS
    from datasetagent.pipeline import build
    from datasetagent.store import RunStore
    from test_backends_pipeline import ColourDetector, _squares, _squares_spec

    _squares(tmp_path / "pool", 8)
    monkeypatch.setitem(BACKENDS._items, "colour-squares", ColourDetector)
    spec = _squares_spec(tmp_path / "pool", "detection")
    run_dir = tmp_path / "run"
    build(spec, run_dir, labelers=["colour-squares"], workers=1)
    with RunStore(run_dir / "run.db") as store:
        two = next(s for s in store.samples(status=["labelled"]) if len(s.annotations) >= 2)
        store.update_samples([two.model_copy(update={"status": "review"})])
    with serving(ReviewSession(run_dir, audit_size=0)) as url:
        bp = browser_page
        bp.page.goto(url)
        bp.page.wait_for_selector("body[data-ready='1']")
        boxes = bp.page.locator("#boxes .box")
        boxes.first.wait_for()
        assert boxes.count() == len(two.annotations)
        bp.screenshot("1-boxes")
        other = next(n for n in spec.class_names if n != two.annotations[0].label)
        boxes.first.click()
        _press(bp, f"Shift+Digit{spec.class_names.index(other) + 1}", f"box relabelled {other}")
        assert boxes.first.inner_text() == other
        _press(bp, "n", "box relabelled")  # selects the next box; the status stays
        _press(bp, "d", "box deleted")
        assert boxes.count() == len(two.annotations) - 1
        _press(bp, "a", "accept")
        bp.screenshot("2-edited")
        bp.assert_clean()
    with RunStore(run_dir / "run.db") as store:
        after = store.find_sample(two.id)
    assert after is not None
    assert after.status == "labelled"
    assert [a.label for a in after.annotations] == [
        other,
        *(a.label for a in two.annotations[2:]),
    ]
