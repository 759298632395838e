"""`rill serve --model hf:...` through a loopback Hugging Face Hub (tests/hub_server.py, reached by
HF_ENDPOINT; HF_HOME in a temporary folder): the embedded GGUF downloaded and served, then served
again offline from a rill.toml naming the same spec with not one request to the Hub; and a small
safetensors repo served by the torch backend under the repo's name."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from rill.cli import embedded_model_path
from tests.e2e.support import make_client
from tests.hub_server import HubServer, write_repo

pytestmark = pytest.mark.e2e

GGUF_REPO = "test/SmolLM2-135M-Instruct-GGUF"
TINY_REPO = "test/Tiny-Llama"
SERVE = ("--parallel", "2", "--ctx", "1024")
ASK = [{"role": "user", "content": "Name three rivers."}]


def tiny_llama(out: Path) -> Path:
    """A Llama of random weights in a 13 MB safetensors file (2 layers, width 128), with the
    embedded SmolLM2's tokenizer: a folder the torch backend loads, answering noise."""
    import torch
    from safetensors.torch import save_file
    from transformers import AutoTokenizer

    from rill.backends.torch.hf_weights import HF_NAMES

    gguf = embedded_model_path()
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    tokenizer.save_pretrained(str(out))
    dim, ffn, head_dim, heads, kv_heads, layers, vocab = 128, 256, 64, 2, 1, 2, len(tokenizer)
    shapes = {"embed": (vocab, dim), "norm": (dim,)}
    per_layer = {"q": (heads * head_dim, dim), "k": (kv_heads * head_dim, dim), "v": (kv_heads * head_dim, dim),
                 "wo": (dim, heads * head_dim), "attn_norm": (dim,), "ffn_norm": (dim,), "gate": (ffn, dim),
                 "up": (ffn, dim), "down": (dim, ffn)}
    generator = torch.Generator().manual_seed(0)
    tensors = {HF_NAMES[role]: torch.randn(shape, generator=generator).to(torch.bfloat16) * 0.02
               for role, shape in shapes.items()}
    tensors.update({HF_NAMES[role].format(i=i): torch.randn(shape, generator=generator).to(torch.bfloat16) * 0.02
                    for i in range(layers) for role, shape in per_layer.items()})
    for name in tensors:
        if name.endswith("norm.weight"):
            tensors[name] = torch.ones_like(tensors[name])
    save_file(tensors, str(out / "model.safetensors"), metadata={"format": "pt"})
    (out / "config.json").write_text(json.dumps({
        "architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": dim, "intermediate_size": ffn,
        "num_attention_heads": heads, "num_key_value_heads": kv_heads, "head_dim": head_dim,
        "num_hidden_layers": layers, "vocab_size": vocab, "rope_theta": 10000.0, "rms_norm_eps": 1e-5,
        "max_position_embeddings": 2048, "tie_word_embeddings": True, "torch_dtype": "bfloat16"}))
    (out / "generation_config.json").write_text(json.dumps({"eos_token_id": tokenizer.eos_token_id}))
    (out / "README.md").write_text("# Tiny-Llama\n")
    return out


@pytest.fixture(scope="module")
def hub(tmp_path_factory: pytest.TempPathFactory) -> Iterator[HubServer]:
    root = tmp_path_factory.mktemp("hub-repos")
    repos = {GGUF_REPO: write_repo(root / "gguf", {"SmolLM2-135M-Instruct.Q4_1.gguf": embedded_model_path(),
                                                   "README.md": b"# SmolLM2-135M-Instruct GGUF\n"}),
             TINY_REPO: tiny_llama(root / "tiny")}
    with HubServer(repos) as server:
        yield server


@pytest.fixture
def hf_home(tmp_path: Path, hub: HubServer, monkeypatch: pytest.MonkeyPatch) -> Path:
    """The servers' environment (launch() copies os.environ): the loopback Hub and a cache of this test's."""
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    monkeypatch.setenv("HF_ENDPOINT", hub.url)
    for name in ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_HUB_OFFLINE", "HF_HUB_CACHE"):
        monkeypatch.delenv(name, raising=False)
    return tmp_path / "hf"


def answer(url: str, model: str) -> str:
    with make_client(url) as client:
        assert [m.id for m in client.models.list().data] == [model]
        r = client.chat.completions.create(model=model, messages=ASK, max_tokens=12, temperature=0)
    assert r.choices[0].finish_reason in ("stop", "length") and r.usage.completion_tokens > 0
    return r.choices[0].message.content


def test_a_hub_gguf_is_downloaded_served_and_then_served_offline_without_a_request(
        rill_factory, hub, hf_home, tmp_path, monkeypatch):
    spec = f"hf:{GGUF_REPO}:Q4_1"
    online = rill_factory("--model", spec, *SERVE, cached=False)
    first = answer(online.url, "SmolLM2-135M-Instruct.Q4_1")  # the file's stem, as for a local file
    assert hub.seen("GET", "/cdn/")  # downloaded through the Hub's file API
    log = online.log_text()
    assert f"cached in {hf_home / 'hub'}" in log and f"{hf_home / 'hub'}/models--test--SmolLM2" in log
    _, killed = online.stop()
    assert not killed

    before = len(hub.requests)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    config = tmp_path / "rill.toml"
    config.write_text(f'[[models]]\nname = "smol"\npath = "{spec}"\nparallel = 2\nctx = 1024\n')
    offline = rill_factory("--config", str(config), cached=False)
    assert answer(offline.url, "smol") == first  # the same file, the same greedy answer
    assert "HF_HUB_OFFLINE is set; using the cached" in offline.log_text()
    assert len(hub.requests) == before  # not one request to the Hub


def test_a_hub_safetensors_repo_is_served_by_the_torch_backend_under_the_repos_name(rill_factory, hub, hf_home):
    server = rill_factory("--model", f"hf:{TINY_REPO}", *SERVE, cached=False)
    answer(server.url, "Tiny-Llama")  # the repo's name, not the snapshot's commit folder
    log = server.log_text()
    assert "on the torch backend" in log and f"{hf_home / 'hub'}/models--test--Tiny-Llama/snapshots/" in log
    fetched = {r.path.rsplit("/", 1)[-1] for r in hub.seen("HEAD") if "/Tiny-Llama/resolve/" in r.path}
    assert fetched == {"config.json", "generation_config.json", "model.safetensors", "tokenizer.json",
                       "tokenizer_config.json", "chat_template.jinja"}  # not the README
