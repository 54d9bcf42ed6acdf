"""Headless Chromium for the browser tests: Debian's ``chromium`` driven by Playwright for Python.

The browser is the system one (``/usr/bin/chromium``; ``make test`` installs it with apt-get),
launched with the flags ``../shared/TOOLCHAIN.md`` lists; ``playwright install`` is never used
(it downloads, and fails offline). Chromium's config and cache go to a temporary folder, never
``~``. A missing browser or Playwright fails the test with what to do; it never skips, so CI
cannot pass without running them.

Use the ``browser_page`` fixture (import it into the test module:
``from browser import browser_page``)::

    def test_x(browser_page: BrowserPage) -> None:
        browser_page.page.goto(url)
        ...
        browser_page.screenshot("after-accept")
        browser_page.assert_clean()   # no failed request, no console error, no page error

Screenshots go to ``test-artifacts/<test name>/`` in the repository root (git-ignored).
"""

from __future__ import annotations

import os
import re
import shutil
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pytest

if TYPE_CHECKING:
    from playwright.sync_api import Page

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--headless",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
]
ARTIFACTS = Path(__file__).resolve().parent.parent / "test-artifacts"


def require_chromium() -> None:
    """Fail (never skip) with the fix when the system browser or Playwright is missing."""
    if not CHROMIUM.is_file():
        pytest.fail(
            f"{CHROMIUM} is missing: the browser tests need Debian's chromium; `make test` "
            "installs it (apt-get install -y chromium), never `playwright install`",
            pytrace=False,
        )
    try:
        import playwright.sync_api  # noqa: F401
    except ImportError:
        pytest.fail(
            "playwright is not installed: `make test` installs it (pip install -e '.[dev]')",
            pytrace=False,
        )


@dataclass
class BrowserPage:
    """A page of a fresh headless Chromium, with what went wrong while it was open."""

    page: Page
    artifacts: Path
    failed_requests: list[str] = field(default_factory=list)
    console_errors: list[str] = field(default_factory=list)
    page_errors: list[str] = field(default_factory=list)

    def screenshot(self, name: str) -> Path:
        """Save a full-page screenshot as ``test-artifacts/<test>/<name>.png``."""
        self.artifacts.mkdir(parents=True, exist_ok=True)
        path = self.artifacts / f"{name}.png"
        self.page.screenshot(path=str(path), full_page=True)
        return path

    def assert_clean(self) -> None:
        """No request failed (or answered 4xx/5xx), nothing went to the console as an error
        and no script raised."""
        problems = self.failed_requests + self.console_errors + self.page_errors
        assert not problems, "the page had problems:\n" + "\n".join(problems)


def _record(bp: BrowserPage) -> None:
    page = bp.page

    def on_failed(request: Any) -> None:
        bp.failed_requests.append(f"request failed: {request.url} ({request.failure})")

    def on_response(response: Any) -> None:
        if response.status >= 400:
            bp.failed_requests.append(f"HTTP {response.status}: {response.url}")

    def on_console(message: Any) -> None:
        if message.type == "error":
            bp.console_errors.append(f"console error: {message.text}")

    def on_page_error(error: Any) -> None:
        bp.page_errors.append(f"page error: {error}")

    page.on("requestfailed", on_failed)
    page.on("response", on_response)
    page.on("console", on_console)
    page.on("pageerror", on_page_error)


@pytest.fixture
def browser_page(
    request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[BrowserPage]:
    """A page of headless system Chromium (1280x900), closed after the test."""
    require_chromium()
    from playwright.sync_api import sync_playwright

    home = tmp_path_factory.mktemp("chromium-home")
    saved = {k: os.environ.get(k) for k in ("XDG_CONFIG_HOME", "XDG_CACHE_HOME")}
    os.environ["XDG_CONFIG_HOME"] = str(home / "config")
    os.environ["XDG_CACHE_HOME"] = str(home / "cache")
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", request.node.name)
    artifacts = ARTIFACTS / name
    shutil.rmtree(artifacts, ignore_errors=True)
    try:
        with sync_playwright() as pw:
            browser = pw.chromium.launch(
                executable_path=str(CHROMIUM), args=CHROMIUM_ARGS, headless=True
            )
            try:
                context = browser.new_context(viewport={"width": 1280, "height": 900})
                bp = BrowserPage(page=context.new_page(), artifacts=artifacts)
                bp.page.set_default_timeout(10_000)
                _record(bp)
                yield bp
            finally:
                browser.close()
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
