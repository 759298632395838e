"""What a client can discover: GET /v1/models (OpenAI list shape), GET /v1/models/{id}, /health,
and the OpenAPI document and its docs page."""

from __future__ import annotations

import pytest

from tests.api.conftest import CHAT_URL, MODEL, assert_error


async def test_models_lists_the_served_model_in_openai_shape(client):
    r = await client.get("/v1/models")
    assert r.status_code == 200
    body = r.json()
    assert body["object"] == "list"
    [card] = body["data"]
    assert card["id"] == MODEL
    assert card["object"] == "model"
    assert isinstance(card["created"], int) and card["created"] > 0
    assert isinstance(card["owned_by"], str) and card["owned_by"]


@pytest.mark.parametrize("name", [MODEL, "echo"])
async def test_model_card_by_id_or_alias(client, name):
    listed = (await client.get("/v1/models")).json()["data"][0]
    r = await client.get(f"/v1/models/{name}")
    assert r.status_code == 200
    assert r.json() == listed


async def test_unknown_model_card_is_a_404(client):
    err = assert_error(await client.get("/v1/models/gpt-9"), 404, code="model_not_found")
    assert "gpt-9" in err["message"]


async def test_models_do_not_claim_reasoning(client):
    """The contract: for a model without a thinking section, /v1/models says it does not reason."""
    card = (await client.get("/v1/models")).json()["data"][0]
    assert card["capabilities"]["reasoning"] is False and card["capabilities"]["tools"] is True
    # the test install has the audio extra; no [search] is configured
    assert card["capabilities"]["audio_output"] is True and card["capabilities"]["web_search"] is False


async def test_health_is_200_when_ready(client):
    r = await client.get("/health")
    assert r.status_code == 200


async def test_openapi_documents_the_chat_request(client):
    r = await client.get("/openapi.json")
    assert r.status_code == 200
    doc = r.json()
    assert doc["openapi"].startswith("3.")
    post = doc["paths"][CHAT_URL]["post"]
    ref = post["requestBody"]["content"]["application/json"]["schema"]["$ref"]
    name = ref.rsplit("/", 1)[-1]
    schema = doc["components"]["schemas"][name]
    assert "messages" in schema["required"]
    for field in ("messages", "model", "stream", "stream_options", "max_tokens", "max_completion_tokens",
                  "temperature", "top_p", "seed", "stop", "user"):
        assert field in schema["properties"], field
    assert "/v1/models" in doc["paths"] and "/health" in doc["paths"]


async def test_openapi_refs_all_resolve(client):
    doc = (await client.get("/openapi.json")).json()
    schemas = doc["components"]["schemas"]

    def refs(node):
        if isinstance(node, dict):
            if "$ref" in node:
                yield node["$ref"]
            for v in node.values():
                yield from refs(v)
        elif isinstance(node, list):
            for v in node:
                yield from refs(v)

    found = list(refs(doc))
    assert found
    for ref in found:
        assert ref.startswith("#/components/schemas/"), ref
        assert ref.rsplit("/", 1)[-1] in schemas, ref


async def test_openapi_does_not_promise_a_422(client):
    """Validation errors are 400s here, never FastAPI's 422."""
    doc = (await client.get("/openapi.json")).json()
    responses = doc["paths"][CHAT_URL]["post"]["responses"]
    assert "422" not in responses
    assert "400" in responses


async def test_docs_page_is_served(client):
    r = await client.get("/docs")
    assert r.status_code == 200
    assert r.headers["content-type"].startswith("text/html")
    assert "openapi.json" in r.text
