"""The Upstreams page in a real browser: a gateway in front of two simulated replicas and a dead
one lists the three, the dead one ejected, the others healthy with the requests they served."""

from __future__ import annotations

from typing import Iterator

import pytest

from tests.e2e.replica_cluster import gateway_config, sim_replicas
from tests.e2e.support import RillFactory, free_port, make_client

pytestmark = pytest.mark.e2e

try:
    from playwright.sync_api import Browser, expect
except ImportError:  # pragma: no cover - the browser fixture skips then
    Browser = object  # type: ignore[misc,assignment]

UI_TIMEOUT_MS = 15_000


@pytest.fixture(scope="module")
def gateway(rill_factory: RillFactory, tmp_path_factory) -> Iterator[tuple[str, list[str], str]]:
    dead = f"http://127.0.0.1:{free_port()}/v1"
    with sim_replicas(2) as urls:
        config = gateway_config(tmp_path_factory.mktemp("ui-replicas") / "rill.toml", [*urls, dead])
        yield rill_factory("--config", str(config), cached=False).url, urls, dead


def test_the_upstreams_page_shows_each_replicas_state(browser: "Browser", gateway) -> None:
    root, urls, dead = gateway
    with make_client(root) as client:
        for n in range(8):
            client.chat.completions.create(model="sea", max_tokens=4,
                                           messages=[{"role": "user", "content": f"Fact {n} about reefs?"}])
    context = browser.new_context(viewport={"width": 1280, "height": 800})
    page = context.new_page()
    try:
        page.goto(root + "/#/upstreams")
        model = page.locator('section[data-model="sea"]')
        expect(model).to_be_visible(timeout=UI_TIMEOUT_MS)
        expect(model.locator("tr[data-replica]")).to_have_count(3)
        expect(model.locator(f'tr[data-replica="{dead}"]')).to_have_attribute("data-state", "ejected")
        for url in urls:
            row = model.locator(f'tr[data-replica="{url}"]')
            expect(row).to_have_attribute("data-state", "healthy")
        served = sum(int(model.locator(f'tr[data-replica="{u}"] td[data-label="Requests"]').inner_text())
                     for u in urls)
        assert served >= 8
        expect(page.locator('nav a[data-view="upstreams"]')).to_have_class("active")
    finally:
        context.close()
