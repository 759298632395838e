"""The web UI's files: `GET /` is the page, `/ui/...` its modules and styles, shipped in the
package; they are public (no data in them) while the API itself keeps needing a key."""

from __future__ import annotations

import pytest

from tests.api.test_key_isolation import OPERATOR_KEY


async def test_the_page_and_its_modules_are_served(client):
    page = await client.get("/")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert '<script type="module" src="/ui/app.js">' in page.text
    for name, kind in (("app.js", "javascript"), ("api.js", "javascript"), ("playground.js", "javascript"),
                       ("traces.js", "javascript"), ("stored.js", "javascript"), ("app.css", "text/css")):
        r = await client.get(f"/ui/{name}")
        assert r.status_code == 200 and kind in r.headers["content-type"], name
    assert (await client.get("/ui/missing.js")).status_code == 404


async def test_no_other_site_may_frame_the_page(client):
    page = await client.get("/")
    assert page.headers["x-frame-options"] == "DENY"
    assert page.headers["content-security-policy"] == "frame-ancestors 'none'"


@pytest.mark.parametrize("config", [{"api_keys": (OPERATOR_KEY,)}], indirect=True)
async def test_with_keys_the_ui_is_public_and_the_api_is_not(client):
    assert (await client.get("/")).status_code == 200
    assert (await client.get("/ui/api.js")).status_code == 200
    assert (await client.get("/v1/models")).status_code == 401
    assert (await client.post("/ui/api.js")).status_code == 401  # only reads are public
    headers = {"Authorization": f"Bearer {OPERATOR_KEY}"}
    assert (await client.get("/v1/models", headers=headers)).status_code == 200
