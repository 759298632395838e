from tests.api.conftest import chat


async def test_non_streaming_echoes(client):
    r = await client.post("/v1/chat/completions", json=chat("héllo wörld", temperature=0))
    assert r.status_code == 200, r.text
    body = r.json()
    assert body["choices"][0]["message"]["content"] == "héllo wörld"
    assert body["choices"][0]["finish_reason"] == "stop"


async def test_streaming(client):
    r = await client.post("/v1/chat/completions", json=chat("hi", stream=True, temperature=0))
    assert r.status_code == 200
    assert r.text.endswith("data: [DONE]\n\n")
