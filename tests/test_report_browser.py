"""report.html in real headless Chromium (tests/browser.py): it opens from disk with no failed
request and no console error (a load the page's CSP refuses would be one), its charts draw and
every thumbnail decodes. Screenshots go to test-artifacts/."""

from __future__ import annotations

from pathlib import Path

from browser import BrowserPage, browser_page  # noqa: F401 (the fixture)
from datasetagent.records import Provenance
from datasetagent.report import write_report
from datasetagent.store import RunStore
from test_report import cls_run, det_run, synthetic_run  # noqa: F401 (fixtures)


def _check(bp: BrowserPage, report: Path, name: str) -> None:
    html = report.read_text(encoding="utf-8")
    bp.page.goto(report.resolve().as_uri())
    bp.page.wait_for_load_state("load")
    charts = bp.page.evaluate(
        "() => [...document.querySelectorAll('figure.chart svg')].map(s => {"
        " const r = s.getBoundingClientRect(); return [r.width, r.height,"
        " s.querySelectorAll('rect, line').length]; })"
    )
    assert len(charts) == html.count('<figure class="chart">') > 0
    assert all(w > 0 and h > 0 and shapes > 0 for w, h, shapes in charts)
    images = bp.page.evaluate(
        "() => [...document.images].map(i => [i.complete, i.naturalWidth, i.naturalHeight])"
    )
    assert len(images) == html.count("<img ") > 0
    assert all(done and w > 0 and h > 0 for done, w, h in images)
    for key in ("targets", "gallery"):
        assert bp.page.locator(f"section#{key} h2").is_visible()
    bp.screenshot(name)
    bp.assert_clean()


def test_a_classification_report_renders_in_chromium(
    browser_page: BrowserPage,  # noqa: F811
    cls_run: Path,  # noqa: F811
) -> None:
    _check(browser_page, cls_run / "report.html", "classification")


def test_a_detection_report_renders_in_chromium(
    browser_page: BrowserPage,  # noqa: F811
    det_run: Path,  # noqa: F811
) -> None:
    _check(browser_page, det_run / "report.html", "detection")


def test_web_provenance_links_load_nothing(
    browser_page: BrowserPage,  # noqa: F811
    tmp_path: Path,
) -> None:
    """A run of web images links each page and licence; opening the report fetches none."""
    prov = Provenance(
        source_kind="openverse",
        location="https://img.example/a.jpg",
        licence="CC-BY-SA-4.0",
        creator="Ana",
        title="A <b>title</b>",
        page="https://www.example/photo/1",
        licence_url="https://creativecommons.org/licenses/by-sa/4.0/",
    )
    spec = synthetic_run(tmp_path / "run", ("a", "b"), 3, provenance=prov, rejected=2)
    with RunStore(tmp_path / "run" / "run.db") as store:
        report = write_report(tmp_path / "run", store, spec)
    requests: list[str] = []
    browser_page.page.on("request", lambda r: requests.append(r.url))
    _check(browser_page, report, "web-provenance")
    assert browser_page.page.locator('a[href="https://www.example/photo/1"]').count() > 0
    assert [u for u in requests if not u.startswith(("file:", "data:"))] == []
