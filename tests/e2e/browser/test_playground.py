"""The Playground in a real browser against the shared `rill serve` (SmolLM2-135M): a streamed
answer seen while it streams, then finished with stats; logprobs as token spans with alternatives;
"View code"; screenshots at laptop and phone width (docs/screenshots/)."""

from __future__ import annotations

import json
import re

import pytest

from tests.e2e.browser.conftest import SCREENSHOTS

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - the browser fixture skips then
    Page = object  # type: ignore[misc,assignment]

DONE_TIMEOUT_MS = 120_000  # an upper bound, so that a hang fails (not a speed assertion)
COUNT = "Count from 1 to 1000, separated by commas."  # greedy SmolLM2 never stops early here

# Seen in one poll: partial text in #answer while the answer is still streaming
# and the Stop button is enabled.
STREAMING_WITH_TEXT = """() => {
  const answer = document.getElementById("answer");
  return answer.dataset.state === "streaming" && answer.textContent.trim().length > 0
    && !document.getElementById("stop").disabled
    && document.getElementById("send").disabled
    && /streaming/.test(document.getElementById("stats").textContent)
    && answer.textContent;
}"""


def fill_param(page: "Page", name: str, value: str) -> None:
    page.locator(f"#p-{name}").fill(value)


def test_streams_then_finishes_with_stats(page: "Page") -> None:
    expect(page.locator("#model option")).not_to_have_count(0)
    expect(page.locator("#model")).to_have_value(re.compile("SmolLM2"))
    fill_param(page, "temperature", "0")
    fill_param(page, "max_tokens", "120")
    fill_param(page, "tags", json.dumps({"suite": "browser-playground"}))
    composer = page.locator("#composer")
    composer.fill(COUNT)
    composer.press("Enter")

    partial = page.wait_for_function(STREAMING_WITH_TEXT, polling=50, timeout=DONE_TIMEOUT_MS).json_value()
    answer = page.locator("#answer")
    expect(answer).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT_MS)
    final = answer.inner_text()
    assert partial.strip() and len(final.strip()) > len(partial.strip()), (partial, final)
    assert final.strip().startswith(partial.strip()[:5])
    stats = page.locator("#stats")
    expect(stats).to_have_text(re.compile(r"TTFT \d+ ms · \d+(\.\d+)? tok/s · 120 tokens"))
    expect(stats).not_to_contain_text("streaming")
    expect(page.locator("#stop")).to_be_disabled()
    expect(page.locator("#send")).to_be_enabled()
    # the turn went into the conversation, the composer was cleared, the span links to its trace
    expect(composer).to_have_value("")
    expect(page.locator("#messages .pg-turn")).to_have_count(2)
    expect(page.locator("#span-link")).to_have_attribute("href", re.compile(r"^#/traces/.+"))
    expect(page.locator(".error:visible")).to_have_count(0)

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    page.screenshot(path=SCREENSHOTS / "playground.png", full_page=True)
    page.set_viewport_size({"width": 390, "height": 844})
    expect(page.locator("#answer")).to_be_visible()
    # the grid collapsed to one column: nothing wider than the phone's screen
    assert page.evaluate("document.documentElement.scrollWidth") <= 390
    page.screenshot(path=SCREENSHOTS / "playground-phone.png", full_page=True)


def test_shift_enter_inserts_a_newline(page: "Page") -> None:
    composer = page.locator("#composer")
    composer.fill("line one")
    composer.press("Shift+Enter")
    composer.type("line two")
    expect(composer).to_have_value("line one\nline two")
    expect(page.locator("#answer")).to_have_attribute("data-state", "idle")


def test_logprobs_tokens_with_alternatives(page: "Page") -> None:
    expect(page.locator("#model option")).not_to_have_count(0)
    fill_param(page, "temperature", "0")
    fill_param(page, "max_tokens", "8")
    page.locator("#p-logprobs").check()
    fill_param(page, "top_logprobs", "3")
    page.locator("#composer").fill("Say hello.")
    page.locator("#send").click()

    expect(page.locator("#answer")).to_have_attribute("data-state", "done", timeout=DONE_TIMEOUT_MS)
    tokens = page.locator("#answer .token")
    expect(tokens.first).to_be_visible()
    assert tokens.count() >= 1
    first = tokens.first
    expect(first).to_have_attribute("title", re.compile(r"alternatives:\n.+ \d+(\.\d+)?%"))
    background = first.evaluate("e => e.style.background")
    assert background.startswith("rgb"), background
    first.hover()
    tooltip = page.locator("#pg-tooltip")
    expect(tooltip).to_be_visible()
    expect(tooltip).to_contain_text("alternatives")
    expect(tooltip.locator(".pg-alt")).to_have_count(4)  # the chosen token, then its top 3
    expect(tooltip).to_contain_text(re.compile(r"\d+(\.\d+)?%"))


def test_view_code(page: "Page") -> None:
    expect(page.locator("#model option")).not_to_have_count(0)
    fill_param(page, "temperature", "0.5")
    page.locator("#composer").fill("What is Rill?")
    page.locator("#view-code").click()
    curl = page.locator("#code-curl")
    python = page.locator("#code-python")
    expect(curl).to_contain_text("/v1/chat/completions")
    expect(curl).to_contain_text('"temperature": 0.5')
    expect(python).to_contain_text("from openai import OpenAI")
    expect(python).to_contain_text(page.evaluate("location.origin") + "/v1")
    expect(python).to_contain_text("temperature=0.5")
    expect(page.locator("#code")).to_contain_text("/v1/chat/completions")


def test_invalid_schema_is_shown_inline(page: "Page") -> None:
    page.locator("#p-format").select_option("json_schema")
    fill_param(page, "schema", "{not json")
    page.locator("#composer").fill("hi")
    page.locator("#send").click()
    expect(page.locator("#p-schema-error")).to_be_visible()
    expect(page.locator("#p-schema-error")).to_contain_text("schema")
    expect(page.locator("#answer")).to_have_attribute("data-state", "idle")
