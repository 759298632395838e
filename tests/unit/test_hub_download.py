"""Hub models downloaded by huggingface_hub from a loopback Hub (tests/hub_server.py) over real
HTTP: the pick, the download into the cache, a resume after a cut connection, HF_TOKEN, the Hub's
401/403/404 as clear errors, and offline or unreachable-Hub reuse of the cache with no request."""

from __future__ import annotations

import hashlib
import logging
from pathlib import Path

import pytest

from rill.cli import embedded_model_path
from rill.config import ModelConfig
from rill.errors import ConfigError
from rill.hub import resolve_model_fields
from rill.hub.cache import cached_models, snapshot_repo_name
from rill.hub.download import fetch
from rill.hub.spec import parse_spec
from tests.hub_server import HubServer, fake_bytes, write_repo

MB = 1_000_000


@pytest.fixture(scope="module")
def repos(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("hub-repos")
    return {
        "test/smol-gguf": write_repo(root / "smol", {"SmolLM2-135M-Instruct.Q4_1.gguf": embedded_model_path(),
                                                     "README.md": b"# SmolLM2\n"}),
        "test/quants": write_repo(root / "quants", {
            "Tiny-Q4_K_M.gguf": fake_bytes(MB, 1), "Tiny-Q4_K_S.gguf": fake_bytes(MB, 2),
            "Tiny-Q8_0.gguf": fake_bytes(2 * MB, 3), "mmproj-Tiny-F16.gguf": fake_bytes(1000, 4),
            "Q6_K/Tiny-Q6_K-00001-of-00002.gguf": fake_bytes(MB, 5),
            "Q6_K/Tiny-Q6_K-00002-of-00002.gguf": fake_bytes(MB // 2, 6)}),
        "test/Tiny-ST": write_repo(root / "st", {
            "config.json": b'{"model_type": "llama"}', "tokenizer.json": b"{}", "tokenizer_config.json": b"{}",
            "chat_template.jinja": b"{{ messages }}", "model.safetensors": fake_bytes(MB, 7),
            "onnx/model.onnx": fake_bytes(1000, 8), "README.md": b"# tiny\n"}),
    }


@pytest.fixture(scope="module")
def shared_hub(repos):
    with HubServer(repos) as hub:
        yield hub


@pytest.fixture
def hub(shared_hub: HubServer) -> HubServer:
    shared_hub.cut_after = shared_hub.fail_with = shared_hub.token = None
    shared_hub.requests.clear()
    return shared_hub


@pytest.fixture(autouse=True)
def hf_env(tmp_path, monkeypatch):
    """Nothing reaches the real cache, token or Hub settings."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf-home"))
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def cache(tmp_path) -> Path:
    return tmp_path / "hub-cache"


def get(text: str, hub: HubServer, cache: Path, **kw):
    return fetch(parse_spec(text), endpoint=hub.url, cache_dir=cache, **kw)


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def test_a_gguf_is_downloaded_into_the_hub_cache_and_named_by_its_stem(hub, cache, caplog):
    caplog.set_level(logging.INFO, "rill.hub")
    model = get("hf:test/smol-gguf", hub, cache)
    assert model.kind == "gguf" and model.name == "SmolLM2-135M-Instruct.Q4_1" and not model.split
    assert model.path.parent.parent.parent == cache / "models--test--smol-gguf"  # snapshots/COMMIT/file
    assert model.path.parent.name == hub.repos["test/smol-gguf"].commit
    assert sha256(model.path) == sha256(embedded_model_path())
    assert (cache / "models--test--smol-gguf" / "refs" / "main").read_text() == model.path.parent.name
    assert [r.path for r in hub.seen("GET", "/cdn/")] == [f"/cdn/{sha256(embedded_model_path())}"]
    assert not [r for r in hub.requests if "README" in r.path]  # only the model's files
    assert f"cached in {cache}" in caplog.text and str(model.path) in caplog.text


def test_a_download_cut_midway_resumes_with_a_range_request(hub, cache):
    hub.cut_after = 25 * MB
    model = get("hf:test/smol-gguf:Q4_1", hub, cache)
    assert sha256(model.path) == sha256(embedded_model_path())  # every byte in place
    first, resumed = hub.seen("GET", "/cdn/")
    assert "range" not in first.headers
    start = int(resumed.headers["range"].removeprefix("bytes=").rstrip("-"))
    assert 0 < start <= 25 * MB  # resumed from what had reached the disk, not from 0


def test_a_quantization_downloads_only_its_file(hub, cache):
    model = get("hf:test/quants:q8_0", hub, cache)
    assert model.path.name == "Tiny-Q8_0.gguf" and model.path.read_bytes() == fake_bytes(2 * MB, 3)
    assert sorted(p.name for p in model.path.parent.iterdir()) == ["Tiny-Q8_0.gguf"]


def test_a_split_gguf_downloads_every_shard_beside_the_first(hub, cache):
    model = get("hf:test/quants:Q6_K", hub, cache)
    assert model.split and model.name == "Tiny-Q6_K" and model.path.name == "Tiny-Q6_K-00001-of-00002.gguf"
    assert (model.path.parent / "Tiny-Q6_K-00002-of-00002.gguf").read_bytes() == fake_bytes(MB // 2, 6)


def test_an_ambiguous_spec_lists_the_repos_files_and_downloads_nothing(hub, cache):
    with pytest.raises(ConfigError) as caught:
        get("hf:test/quants:Q4_K", hub, cache)
    message = caught.value.message
    assert "no model in test/quants on http://127.0.0.1" in message and "matches 'Q4_K'" in message
    assert "Tiny-Q4_K_M.gguf, 1.0 MB" in message and "Tiny-Q4_K_S.gguf, 1.0 MB" in message
    with pytest.raises(ConfigError, match=r"4 models in test/quants .*name one with :QUANT or :FILE"):
        get("hf:test/quants", hub, cache)
    assert not hub.seen(path_prefix="/cdn/") and not cache.exists()


def test_a_safetensors_repo_is_its_snapshot_folder_named_after_the_repo(hub, cache):
    model = get("hf:test/Tiny-ST", hub, cache)
    assert model.kind == "safetensors" and model.name == "Tiny-ST"
    assert sorted(p.name for p in model.path.iterdir()) == ["chat_template.jinja", "config.json", "model.safetensors",
                                                            "tokenizer.json", "tokenizer_config.json"]
    assert snapshot_repo_name(model.path) == "Tiny-ST" and snapshot_repo_name(model.path / "config.json") is None


def test_the_model_fields_get_the_local_path_and_a_served_name(hub, cache):
    fields = resolve_model_fields({"path": Path("hf:test/Tiny-ST"), "n_ctx": 512}, endpoint=hub.url, cache_dir=cache)
    config = ModelConfig(**fields)
    assert config.id == "Tiny-ST" and config.backend == "torch" and config.path.parent.name == "snapshots"
    named = resolve_model_fields({"path": "hf:test/quants:Q8_0", "name": "mine"}, endpoint=hub.url, cache_dir=cache)
    assert named["name"] == "mine" and named["path"].name == "Tiny-Q8_0.gguf"
    plain = {"path": Path("models/x.gguf")}
    assert resolve_model_fields(plain) is plain  # a local path is left alone


def test_a_split_gguf_is_served_by_llama_cpp(hub, cache):
    split = resolve_model_fields({"path": "hf:test/quants:Q6_K"}, endpoint=hub.url, cache_dir=cache)
    assert split["backend"] == "llamacpp" and "split GGUF" in split["backend_reason"]
    assert ModelConfig(**split).backend == "llamacpp"
    with pytest.raises(ConfigError, match="split GGUF .* the torch backend reads one file"):
        resolve_model_fields({"path": "hf:test/quants:Q6_K", "backend": "torch"}, endpoint=hub.url, cache_dir=cache)


def test_hf_token_is_sent_and_without_it_a_private_repo_says_to_set_it(hub, cache, monkeypatch):
    hub.token = "hf_loopback_token"
    with pytest.raises(ConfigError) as caught:
        get("hf:test/quants:Q8_0", hub, cache)
    assert "answered 401 for test/quants" in caught.value.message
    assert "private or gated" in caught.value.message and "set HF_TOKEN" in caught.value.message
    monkeypatch.setenv("HF_TOKEN", "hf_loopback_token")
    assert get("hf:test/quants:Q8_0", hub, cache).path.is_file()
    hub_requests = [r for r in hub.requests if not r.path.startswith("/cdn/")]
    assert hub_requests[-1].headers["authorization"] == "Bearer hf_loopback_token"


@pytest.mark.parametrize("fail_with, says", [
    ((401, "RepoNotFound"), "it does not exist, or it is private or gated"),
    ((403, "GatedRepo"), "test/quants is gated: accept its terms"),
    ((403, None), "answered 403 for test/quants"),
])
def test_the_hubs_refusals_are_clear_errors(hub, cache, fail_with, says):
    hub.fail_with = fail_with
    with pytest.raises(ConfigError) as caught:
        get("hf:test/quants:Q8_0", hub, cache)
    assert caught.value.message.startswith("hf:test/quants:Q8_0: ") and says in caught.value.message
    assert "HF_TOKEN" in caught.value.message


def test_unknown_repos_and_revisions_are_not_found(hub, cache):
    with pytest.raises(ConfigError, match="no repository test/nope on http://127.0.0.1:[0-9]+ \\(check the name\\)"):
        get("hf:test/nope", hub, cache)
    with pytest.raises(ConfigError, match="test/quants has no revision 'v9'"):
        get("hf:test/quants@v9:Q8_0", hub, cache)


def test_a_commit_revision_downloads_that_commit(hub, cache):
    commit = hub.repos["test/quants"].commit
    model = get(f"hf:test/quants@{commit}:Q4_K_M", hub, cache)
    assert model.path.parent.name == commit and model.path.name == "Tiny-Q4_K_M.gguf"


def test_offline_a_cached_model_resolves_with_no_request(hub, cache, caplog):
    online = get("hf:test/quants:Q4_K_M", hub, cache)
    before = len(hub.requests)
    caplog.set_level(logging.INFO, "rill.hub")
    assert get("hf:test/quants:Q4_K_M", hub, cache, offline=True) == online
    assert get("hf:test/quants", hub, cache, offline=True) == online  # the one GGUF cached: no ambiguity
    assert len(hub.requests) == before
    assert "HF_HUB_OFFLINE is set; using the cached" in caplog.text
    with pytest.raises(ConfigError) as caught:  # cached files only: Q8_0 was never pulled
        get("hf:test/quants:Q8_0", hub, cache, offline=True)
    assert "no model in the cache (HF_HUB_OFFLINE is set) matches 'Q8_0'; it has:\n  Tiny-Q4_K_M.gguf" in (
        caught.value.message)
    with pytest.raises(ConfigError) as caught:
        get("hf:test/smol-gguf", hub, cache, offline=True)
    assert "is not in the Hugging Face cache" in caught.value.message
    assert "`rill pull hf:test/smol-gguf`" in caught.value.message
    assert len(hub.requests) == before


def test_with_the_hub_down_or_gone_the_cache_serves(repos, cache, caplog):
    caplog.set_level(logging.INFO, "rill.hub")
    with HubServer(repos) as hub:
        online = get("hf:test/Tiny-ST", hub, cache)
        hub.fail_with = (503, None)
        before = len(hub.requests)
        assert get("hf:test/Tiny-ST", hub, cache) == online
        assert len(hub.requests) == before + 1  # one listing, not retried
        assert "could not be reached; using the cached" in caplog.text
    assert get("hf:test/Tiny-ST", hub, cache) == online  # nothing listens there now
    with pytest.raises(ConfigError) as caught:
        get("hf:test/quants:Q8_0", hub, cache)
    message = caught.value.message
    assert f"is not in the Hugging Face cache ({cache}) and the Hub at {hub.url} could not be reached" in message
    assert "rill pull hf:test/quants:Q8_0" in message


def test_rill_models_rows_list_each_cached_model_with_its_size(hub, cache):
    get("hf:test/quants:Q4_K_M", hub, cache)
    get("hf:test/quants:Q6_K", hub, cache)
    get("hf:test/Tiny-ST", hub, cache)
    rows = {m.spec: m for m in cached_models(cache)}
    assert set(rows) == {"hf:test/Tiny-ST", "hf:test/quants:Tiny-Q4_K_M.gguf",
                         "hf:test/quants:Q6_K/Tiny-Q6_K-00001-of-00002.gguf"}
    assert rows["hf:test/quants:Tiny-Q4_K_M.gguf"].size == MB and rows["hf:test/quants:Tiny-Q4_K_M.gguf"].kind == "gguf"
    assert rows["hf:test/quants:Q6_K/Tiny-Q6_K-00001-of-00002.gguf"].size == MB + MB // 2
    assert rows["hf:test/Tiny-ST"].kind == "safetensors" and rows["hf:test/Tiny-ST"].revision == "main"
    assert rows["hf:test/Tiny-ST"].path.name == hub.repos["test/Tiny-ST"].commit
    assert cached_models(cache.parent / "no-cache") == []
