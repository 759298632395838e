"""Browser tests: Python playwright driving Debian's chromium (headless) against a real `rill
serve` (the e2e session's shared server). Skipped, with the reason, where chromium or playwright
is missing (`make test` installs both where it can)."""

from __future__ import annotations

import os
import shutil
import tempfile
from pathlib import Path
from typing import Iterator

import pytest

CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# Where the tests leave their screenshots: RILL_SCREENSHOTS=docs/screenshots refreshes the README's;
# by default a temporary folder, so a test run leaves the checkout as it was.
SCREENSHOTS = Path(os.environ.get("RILL_SCREENSHOTS") or Path(tempfile.gettempdir()) / "rill-screenshots")

try:
    from playwright.sync_api import Browser, Page, sync_playwright
except ImportError:  # pragma: no cover - the test extras install it
    sync_playwright = None  # type: ignore[assignment]


@pytest.fixture(scope="module")
def browser() -> Iterator["Browser"]:
    """Per module, not per session: playwright's sync API keeps an event loop running in this
    thread while it is open, and the async tests of later modules need the thread's loop free."""
    if sync_playwright is None:
        pytest.skip("the playwright package is not installed (pip install playwright)")
    if not Path(CHROMIUM).exists():
        pytest.skip(f"chromium is not installed at {CHROMIUM} (apt-get install chromium)")
    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, headless=True, args=["--no-sandbox"])
        yield browser
        browser.close()


@pytest.fixture
def page(browser: "Browser", root: str) -> Iterator["Page"]:
    """A fresh page (laptop-sized) on the shared server's UI."""
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    page.goto(root + "/")
    yield page
    context.close()
