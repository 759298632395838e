"""An upstream model with several replicas, through the app: routing by the conversation's prefix,
tries on another replica before the first byte, ejection and recovery, active health checks, and
the replicas' state in GET /v1/upstreams and /metrics (rill/upstreams, docs/gateway.md)."""

from __future__ import annotations

import httpx
import pytest

from rill.config import ReplicaConfig, UpstreamConfig
from rill.upstreams.replica_set import ReplicaSet
from tests.api.conftest import wait_until
from tests.api.gateway.fake_upstream import USAGE, FakeUpstream, chunk, status, streamed
from tests.api.mock_pool import MockPool

HOSTS = ("a.test", "b.test", "c.test")


def replicated(name: str = "up", hosts: tuple[str, ...] = HOSTS, **fields) -> UpstreamConfig:
    return UpstreamConfig(name=name, base_urls=tuple(f"http://{h}/v1" for h in hosts), model="remote-name",
                          **{"retries": 0, "timeout": 5.0, "health_interval": 0, **fields})


def answer(text: str = "Hi", cached: int = 0):
    usage = {**USAGE, "prompt_tokens": 100, "prompt_tokens_details": {"cached_tokens": cached}}
    return streamed(chunk("", role="assistant"), chunk(text), chunk(finish="stop"), chunk(choices=False, usage=usage))


def all_answer(fake: FakeUpstream, hosts=HOSTS) -> None:
    for host in hosts:
        fake.script(host, answer(f"from {host}"))


def hosts_hit(fake: FakeUpstream) -> list[str]:
    return [r.url.host for r in fake.requests if r.url.path.endswith("/chat/completions")]


def conversation(*turns: str) -> list[dict]:
    roles = ("user", "assistant")
    return [{"role": "system", "content": "You answer questions about the sea in one sentence."},
            *({"role": roles[i % 2], "content": t} for i, t in enumerate(turns))]


async def ask(client: httpx.AsyncClient, messages: list[dict], **extra) -> httpx.Response:
    return await client.post("/v1/chat/completions", json={"model": "up", "messages": messages, "stream": True,
                                                           "stream_options": {"include_usage": True}, **extra})


class Clock:
    def __init__(self):
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(app) -> Clock:
    """The replicas' health clock, moved by hand."""
    clock = Clock()
    for replica in app.state.router.resolve("up").upstream.replicas:
        replica.health._clock = clock
    return clock


def replica_set(app) -> ReplicaSet:
    return app.state.router.resolve("up").upstream


@pytest.mark.parametrize("models", [(replicated(),)], indirect=True)
async def test_a_conversations_turns_go_to_one_replica_and_conversations_spread(fake, client, app):
    all_answer(fake)
    first_turn = "Why is the sea salty? Please explain the rivers, the rocks and the vents. " * 3
    r = await ask(client, conversation(first_turn))
    assert r.status_code == 200 and "data: [DONE]" in r.text
    home = hosts_hit(fake)[-1]
    for n in range(4):
        turns = [first_turn]
        for k in range(n + 1):
            turns += [f"Answer {k}.", f"Follow-up question {k}?"]
        await ask(client, conversation(*turns))
        assert hosts_hit(fake)[-1] == home
    for n in range(30):
        await ask(client, conversation(f"Unrelated question {n} about tides?"))
    assert set(hosts_hit(fake)) == set(HOSTS)
    routed = {r.url: dict(r.routed) for r in replica_set(app).replicas}
    assert sum(c.get("prefix", 0) for c in routed.values()) == 4


@pytest.mark.parametrize("models", [(replicated(eject_after=2, eject_seconds=30),)], indirect=True)
async def test_a_replica_that_fails_before_the_first_byte_is_tried_on_another_then_ejected(fake, client, app, clock):
    all_answer(fake)
    fake.script("a.test", lambda request: (_ for _ in ()).throw(httpx.ConnectError("refused")))
    rs = replica_set(app)
    a = rs.replicas[0]
    served = 0
    for n in range(40):
        r = await ask(client, conversation(f"Question {n}?"))
        assert r.status_code == 200 and "from a.test" not in r.text
        served += 1
    assert a.health.state == "ejected" and a.errors == 2 and a.health.ejections == 1
    hits_before = hosts_hit(fake).count("a.test")
    for n in range(20):
        await ask(client, conversation(f"More {n}?"))
    assert hosts_hit(fake).count("a.test") == hits_before  # an ejected replica gets no traffic
    # half-open after eject_seconds: one trial; it is back, so it takes traffic again
    fake.script("a.test", answer("from a.test"))
    clock.now += 30
    assert a.health.state == "half_open"
    for n in range(30):
        await ask(client, conversation(f"Later {n}?"))
    assert a.health.state == "healthy" and hosts_hit(fake).count("a.test") > hits_before + 1


@pytest.mark.parametrize("models", [(replicated(eject_after=1, eject_seconds=10),)], indirect=True)
async def test_a_failed_trial_ejects_the_replica_for_twice_as_long(fake, client, app, clock):
    all_answer(fake)
    fake.script("a.test", status(503))
    a = replica_set(app).replicas[0]
    for n in range(20):
        assert (await ask(client, conversation(f"Q{n}?"))).status_code == 200
        if a.health.state == "ejected":
            break
    assert a.health.state == "ejected" and a.health.eta() == pytest.approx(10)
    clock.now += 10
    for n in range(20):
        assert (await ask(client, conversation(f"R{n}?"))).status_code == 200
        if a.health.state == "ejected":
            break
    assert a.health.eta() == pytest.approx(20) and a.health.ejections == 2


@pytest.mark.parametrize("models", [(replicated(hosts=HOSTS[:2]),)], indirect=True)
async def test_a_refusal_is_the_requests_fault_and_is_neither_retried_nor_counted(fake, client, app):
    fake.script("a.test", status(400, {"error": {"message": "bad field", "type": "invalid_request_error"}}))
    fake.script("b.test", status(400, {"error": {"message": "bad field", "type": "invalid_request_error"}}))
    r = await ask(client, conversation("Hello?"))
    assert r.status_code == 400 and "bad field" in r.json()["error"]["message"]
    assert len(hosts_hit(fake)) == 1
    assert all(rep.errors == 0 and rep.health.failures == 0 for rep in replica_set(app).replicas)


@pytest.mark.parametrize("models", [(replicated(hosts=HOSTS[:2]),)], indirect=True)
async def test_a_busy_replica_passes_the_request_to_the_next_without_counting_against_it(fake, client, app):
    fake.script("a.test", status(429, {"error": {"message": "slow down", "type": "rate_limit_error"}}))
    fake.script("b.test", answer("from b.test"))
    for n in range(10):
        r = await ask(client, conversation(f"Q{n}?"))
        assert r.status_code == 200 and "from b.test" in r.text
    a = replica_set(app).replicas[0]
    assert a.health.state == "healthy" and a.health.failures == 0 and a.requests >= 1


@pytest.mark.parametrize("models", [(replicated(hosts=HOSTS[:2]), UpstreamConfig(
    name="spare", base_url="http://spare.test/v1", retries=0, timeout=5.0))], indirect=True)
async def test_every_replica_is_tried_before_the_fallback_model(fake, client, app):
    app.state.router.resolve("up").fallbacks = ("spare",)
    fake.script("a.test", status(502))
    fake.script("b.test", status(502))
    fake.script("spare.test", answer("from the spare"))
    r = await ask(client, conversation("Q?"))
    assert r.status_code == 200 and "from the spare" in r.text
    assert hosts_hit(fake) == sorted(hosts_hit(fake)[:2]) + ["spare.test"] or set(hosts_hit(fake)[:2]) == {"a.test", "b.test"}
    assert hosts_hit(fake)[-1] == "spare.test" and len(hosts_hit(fake)) == 3


@pytest.mark.parametrize("models", [(replicated(hosts=HOSTS[:2], eject_after=1, eject_seconds=30),)], indirect=True)
async def test_when_every_replica_is_ejected_the_one_back_soonest_is_tried(fake, client, app, clock):
    fake.script("a.test", status(500))
    fake.script("b.test", status(500))
    rs = replica_set(app)
    r = await ask(client, conversation("Q?"))
    assert r.status_code == 502
    assert all(rep.health.state == "ejected" for rep in rs.replicas)
    clock.now += 5
    all_answer(fake, HOSTS[:2])
    r = await ask(client, conversation("Again?"))
    assert r.status_code == 200 and hosts_hit(fake)[-1] == "a.test"  # both back at once: the first listed
    assert rs.replicas[0].health.state == "healthy" and rs.replicas[1].health.state == "ejected"


@pytest.mark.parametrize("models", [(replicated(eject_after=2, health_path="/health"),)], indirect=True)
async def test_active_checks_eject_a_sick_replica_and_bring_it_back(fake, client, app, clock):
    healthy = {"a.test": True, "b.test": True, "c.test": True}

    def health(request):
        return httpx.Response(200 if healthy[request.url.host] else 503, json={"status": "?"})

    for host in HOSTS:
        fake.script(host, lambda request: health(request) if request.url.path == "/health" else answer()(request))
    rs = replica_set(app)
    c = rs.replicas[2]
    healthy["c.test"] = False
    await rs.check()
    assert c.health.state == "healthy" and c.health.failures == 1
    await rs.check()
    assert c.health.state == "ejected"
    probes = [r for r in fake.requests if r.url.path == "/health"]
    assert {r.url.host for r in probes} == set(HOSTS) and len(probes) == 6
    healthy["c.test"] = True
    await rs.check()
    assert c.health.state == "ejected"  # it waits out its ejection
    clock.now += 30
    await rs.check()
    assert c.health.state == "healthy"


@pytest.mark.parametrize("models", [(replicated(health_interval=0.01, health_path="models"),)], indirect=True)
async def test_the_server_runs_the_checks_on_its_own_with_the_replicas_key(fake, client, app, monkeypatch):
    for host in HOSTS:
        fake.script(host, lambda request: httpx.Response(200, json={"object": "list", "data": []}))
    await wait_until(lambda: {r.url.host for r in fake.requests if r.url.path == "/v1/models"} == set(HOSTS),
                     what="every replica was checked")


@pytest.mark.parametrize("models", [(replicated(),)], indirect=True)
async def test_upstreams_lists_each_replicas_state_and_metrics_count_them(fake, client, app):
    all_answer(fake)
    for n in range(6):
        await ask(client, conversation("The same question about waves, asked again and again. " * 4))
    r = await client.get("/v1/upstreams")
    assert r.status_code == 200
    (model,) = r.json()["data"]
    assert model["model"] == "up" and model["routing"] == "prefix" and len(model["replicas"]) == 3
    served = [rep for rep in model["replicas"] if rep["requests"]]
    assert len(served) == 1  # one conversation, one replica
    rep = served[0]
    assert rep["state"] == "healthy" and rep["requests"] == 6 and rep["prompt_tokens"] == 600
    assert rep["routed"] == {"home": 1, "prefix": 5} and rep["ejected_since"] is None
    text = (await client.get("/metrics")).text
    label = f'model="up",replica="{rep["url"]}"'
    assert f"rill_upstream_replica_requests_total{{{label}}} 6.0" in text
    assert f'rill_upstream_replica_state{{{label},state="healthy"}} 1.0' in text
    assert f'rill_upstream_replica_routed_total{{model="up",reason="prefix",replica="{rep["url"]}"}} 5.0' in text
    models = (await client.get("/v1/models")).json()["data"]
    assert [m["id"] for m in models].count("up") == 1  # one model, many servers


@pytest.mark.parametrize("models", [(replicated(hosts=HOSTS[:2]),)], indirect=True)
async def test_reported_cached_tokens_give_the_replicas_prefix_hit_rate(fake, client, app):
    fake.script("a.test", answer(cached=80))
    fake.script("b.test", answer(cached=80))
    await ask(client, conversation("Tell me about currents. " * 10))
    rep = next(r for r in replica_set(app).replicas if r.requests)
    assert rep.snapshot()["prefix_hit_rate"] == 0.8


def test_upstreams_needs_an_admin_key_on_a_keyed_server(tmp_path):
    import asyncio

    from rill.api.app import create_app
    from rill.backends.fake import FakeBackend
    from rill.config import ServerConfig
    from tests.api.conftest import fake_loader

    async def run():
        config = ServerConfig(models=(replicated(),), database_url=f"sqlite:///{tmp_path / 'r.db'}",
                              api_keys=("operator-key-0123456789",))
        app = create_app(config, fake_loader(FakeBackend()), exit_on_load_failure=False,
                         upstream_pool=MockPool(FakeUpstream().handle))
        async with app.router.lifespan_context(app):
            keys = app.state.keys
            _, user_secret = await keys.create("user", admin=False)
            async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://rill.test") as c:
                refused = await c.get("/v1/upstreams", headers={"Authorization": f"Bearer {user_secret}"})
                allowed = await c.get("/v1/upstreams", headers={"Authorization": "Bearer operator-key-0123456789"})
        return refused, allowed

    refused, allowed = asyncio.run(run())
    assert refused.status_code == 403 and refused.json()["error"]["code"] == "insufficient_permissions"
    assert allowed.status_code == 200 and allowed.json()["data"][0]["model"] == "up"


def test_one_replica_per_url_and_the_per_replica_table():
    config = UpstreamConfig(name="m", replicas=(ReplicaConfig("http://a/v1"), ReplicaConfig("http://b/v1", weight=3)))
    rs = ReplicaSet(config, pool=MockPool(FakeUpstream().handle))
    assert [r.url for r in rs.replicas] == ["http://a/v1", "http://b/v1"] and rs.replicas[1].weight == 3
    assert rs.replicas[1].client.config.base_url == "http://b/v1"
