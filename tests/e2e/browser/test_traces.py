"""The trace browser and stored completions in a real browser (headless chromium) against the
shared `rill serve`: a tagged completion found by the tag filter and its span's details, a
workflow span with a nested completion drawn as a tree with a timeline, the stored-completions
table with its metadata, and a screenshot of the nested trace view."""

from __future__ import annotations

import re
import uuid
from datetime import datetime, timezone

import httpx
import pytest

from tests.e2e.browser.conftest import SCREENSHOTS
from tests.e2e.support import CLIENT_TIMEOUT_S, MODEL

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import Page, expect
except ImportError:  # pragma: no cover - the conftest skips without playwright
    Page = object  # type: ignore[assignment,misc]

UI_TIMEOUT_MS = 15_000
ASK = [{"role": "user", "content": "Name a colour."}]


def complete(root: str, **extra: object) -> httpx.Response:
    body = {"model": MODEL, "messages": ASK, "max_tokens": 8, "temperature": 0, **extra}
    r = httpx.post(root + "/v1/chat/completions", json=body, timeout=CLIENT_TIMEOUT_S)
    assert r.status_code == 200, r.text
    return r


def test_tag_filter_finds_the_trace_and_its_span_details(page: Page, root: str) -> None:
    suite = f"browser-{uuid.uuid4().hex[:10]}"
    r = complete(root, tags={"suite": suite}, store=True, metadata={"suite": suite}, user="ui-tester")
    trace_id, span_id = r.headers["x-rill-trace-id"], r.headers["x-rill-span-id"]

    page.goto(root + "/#/traces")
    expect(page.locator("#traces, .empty")).not_to_have_count(0, timeout=UI_TIMEOUT_MS)
    page.fill("#filter-tag", f"suite:{suite}")
    page.click("#filter-apply")
    rows = page.locator("#traces tbody tr")
    expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(page.locator(f'#traces tbody tr[data-trace-id="{trace_id}"]')).to_have_count(1)
    expect(rows.first).to_contain_text(f"suite: {suite}")
    expect(rows.first).to_contain_text("ui-tester")
    expect(rows.first).to_contain_text("ok")
    expect(page.locator("#traces-total")).to_contain_text("of 1")

    rows.first.focus()
    page.keyboard.press("Enter")  # keyboard-usable: Enter opens the focused row
    expect(page).to_have_url(re.compile(re.escape(f"#/traces/{trace_id}") + "$"), timeout=UI_TIMEOUT_MS)
    span = page.locator(f'.span-row[data-span-id="{span_id}"]')
    expect(span).to_have_count(1, timeout=UI_TIMEOUT_MS)
    span.click()
    detail = page.locator("#span-detail")
    expect(detail).to_contain_text(f"suite: {suite}", timeout=UI_TIMEOUT_MS)
    expect(detail).to_contain_text("Usage")
    expect(detail).to_contain_text("completion_tokens")
    expect(detail).to_contain_text("Timings")
    expect(detail).to_contain_text("ttft_ms")
    expect(detail).to_contain_text("Name a colour.")  # the input's messages
    expect(detail).to_contain_text(r.json()["id"])  # the completion id


def test_nested_trace_shows_the_tree_and_timeline(page: Page, root: str) -> None:
    name = f"browser-workflow-{uuid.uuid4().hex[:8]}"
    made = httpx.post(root + "/v1/spans", json={"name": name, "type": "workflow", "input": {"question": "colour"},
                                                "tags": {"suite": name}}, timeout=CLIENT_TIMEOUT_S)
    assert made.status_code in (200, 201), made.text
    parent = made.json()
    r = complete(root, parent_span_id=parent["id"])
    child_id = r.headers["x-rill-span-id"]
    trace_id = r.headers["x-rill-trace-id"]
    closed = httpx.patch(root + f"/v1/spans/{parent['id']}", json={"end_time": _now_iso(), "output": "done"},
                         timeout=CLIENT_TIMEOUT_S)
    assert closed.status_code == 200, closed.text

    page.goto(root + f"/#/traces/{trace_id}")
    rows = page.locator(".span-row")
    expect(rows).to_have_count(2, timeout=UI_TIMEOUT_MS)
    expect(rows.nth(0)).to_have_attribute("data-span-id", parent["id"])
    expect(rows.nth(1)).to_have_attribute("data-span-id", child_id)
    expect(rows.nth(0)).to_have_attribute("data-depth", "0")
    expect(rows.nth(1)).to_have_attribute("data-depth", "1")
    expect(page.locator(".span-row .span-bar")).to_have_count(2)
    for i in range(2):
        expect(rows.nth(i).locator(".span-bar")).to_be_visible()
    pad = [rows.nth(i).locator(".span-label").evaluate("e => parseFloat(getComputedStyle(e).paddingLeft)")
           for i in range(2)]
    assert pad[1] > pad[0], pad  # the child is indented
    parent_bar, child_bar = (rows.nth(i).locator(".span-bar").bounding_box() for i in range(2))
    assert parent_bar and child_bar
    assert child_bar["width"] <= parent_bar["width"] + 1  # the child lies within its parent's time
    rows.nth(0).click()
    expect(page.locator("#span-detail")).to_contain_text("workflow")
    expect(page.locator("#span-detail")).to_contain_text("colour")

    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    rows.nth(1).click()
    expect(page.locator("#span-detail")).to_contain_text("ttft_ms")
    page.screenshot(path=str(SCREENSHOTS / "trace.png"))


def test_stored_lists_the_completion_with_its_metadata(page: Page, root: str) -> None:
    suite = f"browser-stored-{uuid.uuid4().hex[:8]}"
    made = complete(root, store=True, metadata={"suite": suite}).json()

    page.goto(root + "/#/stored")
    expect(page.locator("#stored, .empty")).not_to_have_count(0, timeout=UI_TIMEOUT_MS)
    page.fill("#filter-metadata", f"suite={suite}")
    page.click("#stored-apply")
    rows = page.locator("#stored tbody tr")
    expect(rows).to_have_count(1, timeout=UI_TIMEOUT_MS)
    expect(rows.first).to_have_attribute("data-completion-id", made["id"])
    expect(rows.first).to_contain_text(f"suite={suite}")
    expect(rows.first).to_contain_text(MODEL)
    rows.first.click()
    detail = page.locator("#stored-detail")
    expect(detail).to_contain_text("Name a colour.", timeout=UI_TIMEOUT_MS)
    answer = made["choices"][0]["message"]["content"]
    if answer.strip():
        expect(page.locator("#stored-answer")).to_contain_text(answer.strip().split()[0])


def test_empty_filter_result_says_so(page: Page, root: str) -> None:
    page.goto(root + "/#/traces")
    page.fill("#filter-tag", f"suite:none-{uuid.uuid4().hex}")
    page.click("#filter-apply")
    expect(page.locator("#traces-results")).to_contain_text("No traces match", timeout=UI_TIMEOUT_MS)


def test_phone_width_traces_view_fits(browser, root: str) -> None:
    context = browser.new_context(viewport={"width": 390, "height": 844})
    try:
        page = context.new_page()
        page.goto(root + "/#/traces")
        expect(page.locator("#filter-tag")).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(page.locator("#traces, .empty")).not_to_have_count(0, timeout=UI_TIMEOUT_MS)
        overflow = page.evaluate("document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 1, overflow
    finally:
        context.close()


def _now_iso() -> str:
    return datetime.now(timezone.utc).isoformat()


def test_an_unknown_trace_shows_the_api_error_inline(page: Page, root: str) -> None:
    page.goto(root + f"/#/traces/no-such-trace-{uuid.uuid4().hex}")
    expect(page.locator("#view p.error[role=alert]")).to_be_visible(timeout=UI_TIMEOUT_MS)
    expect(page.locator(".span-row")).to_have_count(0)


@pytest.mark.parametrize("protocol", ["responses", "messages"])
def test_every_protocol_s_request_is_a_trace_in_the_browser(page: Page, root: str, protocol: str) -> None:
    """A Responses or Messages request is a span like a chat completion's: found by its user,
    its type the protocol, its input shown."""
    who = f"ui-{protocol}-{uuid.uuid4().hex[:8]}"
    if protocol == "responses":
        r = httpx.post(root + "/v1/responses", json={"model": MODEL, "input": "Name a colour.", "max_output_tokens": 8,
                                                      "temperature": 0, "user": who, "store": False},
                       timeout=CLIENT_TIMEOUT_S)
    else:
        r = httpx.post(root + "/v1/messages", json={"model": MODEL, "max_tokens": 8, "temperature": 0, "messages": ASK,
                                                     "metadata": {"user_id": who}}, timeout=CLIENT_TIMEOUT_S)
    assert r.status_code == 200, r.text
    trace_id, span_id = r.headers["x-rill-trace-id"], r.headers["x-rill-span-id"]

    page.goto(root + "/#/traces")
    expect(page.locator("#traces, .empty")).not_to_have_count(0, timeout=UI_TIMEOUT_MS)
    page.fill("#filter-user", who)
    page.click("#filter-apply")
    row = page.locator(f'#traces tbody tr[data-trace-id="{trace_id}"]')
    expect(row).to_have_count(1, timeout=UI_TIMEOUT_MS)
    row.click()
    span = page.locator(f'.span-row[data-span-id="{span_id}"]')
    expect(span).to_contain_text(protocol, timeout=UI_TIMEOUT_MS)
    span.click()
    detail = page.locator("#span-detail")
    expect(detail).to_contain_text("Name a colour.", timeout=UI_TIMEOUT_MS)
    expect(detail).to_contain_text("Usage")
