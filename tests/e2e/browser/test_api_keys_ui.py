"""The UI on a server with API keys: without a key the API answers 401 and the page says so; the
key entered once in the dialog is kept in local storage and sent as a Bearer header, also after
a reload."""

from __future__ import annotations

import re

import pytest

from tests.e2e.support import RillFactory

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import Browser, expect
except ImportError:  # pragma: no cover - the browser fixture skips then
    Browser = object  # type: ignore[misc,assignment]

KEY = "browser-test-key-0123456789"
DONE_TIMEOUT_MS = 120_000  # an upper bound, so that a hang fails


@pytest.fixture(scope="module")
def keyed(rill_factory: RillFactory) -> str:
    return rill_factory("--api-key", KEY).url


def test_the_key_is_asked_once_and_kept(browser: "Browser", keyed: str) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto(keyed + "/")
        expect(page.get_by_text(re.compile("Error 401"))).to_be_visible()
        page.click("#api-key-button")
        page.fill("#api-key-input", KEY)
        page.click("#api-key-save")
        expect(page.locator("#model")).to_have_value(re.compile("SmolLM2"))
        page.locator("#p-max_tokens").fill("8")
        page.locator("#composer").fill("Say hi.")
        page.locator("#composer").press("Enter")
        expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT_MS)
        assert page.locator("#answer").inner_text().strip()
        assert page.evaluate("localStorage.getItem('rill.apiKey')") == KEY

        page.reload()  # kept: no dialog needed again
        expect(page.locator("#model")).to_have_value(re.compile("SmolLM2"))
        expect(page.get_by_text(re.compile("Error 401"))).to_have_count(0)
    finally:
        context.close()
