"""The torch backend on a Hugging Face model folder: the embedded SmolLM2 written out the way its
checkpoint on the Hub is (bf16 safetensors under Hugging Face's tensor names, config.json, and the
tokenizer files transformers makes from the GGUF file's vocabulary), then served from there.

The folder's tokenizer must read and spell every token as llama.cpp's reading of the GGUF file
does, and its weights (the GGUF's, rounded to bf16) must give the same bf16 logits as the GGUF file
loaded in bf16.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import numpy as np
import pytest

from rill.backends.base import BatchItem
from rill.backends.hf_vocab import HFVocab
from rill.backends.llama_vocab import LlamaVocab
from rill.backends.torch.backend import TorchBackend
from rill.cli import embedded_model_path
from rill.config import ModelConfig
from rill.sampling.template import ChatTemplate
from benchmarks.gguf_to_hf import write_hf_folder
from tests.e2e.support import make_client

pytestmark = pytest.mark.e2e

CONFIG = ModelConfig(n_ctx=1024, parallel=4)
TEXTS = ["Write a haiku about rivers.", "naïve café, 東京 and emoji 🦀 too",
         "<|im_start|>user\nspecial tokens in text<|im_end|>", "  two  spaces,\ttabs\nand newlines\n\n",
         "def f(x):\n    return {'a': [1, 2.5e-3]}"]


@pytest.fixture(scope="module")
def hf_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("hf") / "SmolLM2-135M-Instruct-hf"
    write_hf_folder(embedded_model_path(), out)
    return out


@pytest.fixture(scope="module")
def vocabs(hf_folder: Path) -> Iterator[tuple[HFVocab, LlamaVocab]]:
    gguf = LlamaVocab.load(embedded_model_path())
    yield HFVocab(hf_folder), gguf
    gguf.close()


def test_the_folders_tokenizer_reads_text_as_llama_cpp_reads_the_gguf(vocabs):
    hf, gguf = vocabs
    template = ChatTemplate(gguf.chat_template)
    assert hf.chat_template == gguf.chat_template and hf.n_vocab == gguf.n_vocab
    for text in [*TEXTS, template.render([{"role": "user", "content": t} for t in TEXTS[:2]])]:
        for special in (True, False):
            assert (hf.tokenize(text, add_bos=False, parse_special=special)
                    == gguf.tokenize(text, add_bos=False, parse_special=special)), (text, special)


def test_every_token_is_spelled_alike_and_the_same_tokens_end_a_turn(vocabs):
    hf, gguf = vocabs
    assert [hf.token_bytes(t) for t in range(hf.n_vocab)] == [gguf.token_bytes(t) for t in range(gguf.n_vocab)]
    assert ({t for t in range(hf.n_vocab) if hf.is_end_of_generation(t)}
            <= {t for t in range(gguf.n_vocab) if gguf.is_end_of_generation(t)})
    assert hf.is_end_of_generation(gguf.tokenize("<|im_end|>", add_bos=False)[0])
    assert hf.guidance_tokenizer() is hf.guidance_tokenizer()  # built from tokenizer.json, then kept


def test_the_folder_gives_the_gguf_files_bf16_logits(hf_folder):
    folder = TorchBackend.load(hf_folder, CONFIG, name="hf", dtype="bf16")
    gguf = TorchBackend.load(embedded_model_path(), CONFIG, name="gguf", dtype="bf16")
    assert folder.model.spec == gguf.model.spec
    for text in TEXTS:
        tokens = gguf.tokenize(text, add_bos=False)
        a = folder.forward([BatchItem(0, tokens, 0, num_logits=len(tokens))])
        b = gguf.forward([BatchItem(0, tokens, 0, num_logits=len(tokens))])
        np.testing.assert_array_equal(a, b)  # the same bf16 weights, computed alike
        folder.release(0), gguf.release(0)
    folder.close(), gguf.close()


def test_rill_serve_a_hugging_face_folder_with_the_torch_backend(rill_factory, hf_folder):
    server = rill_factory("--backend", "torch", "--model", str(hf_folder), "--parallel", "2", "--ctx", "1024")
    client = make_client(server.url)
    try:
        assert [m.id for m in client.models.list().data] == [hf_folder.name]
        messages = [{"role": "user", "content": "Name three rivers."}]
        chunks = list(client.chat.completions.create(model=hf_folder.name, messages=messages, max_tokens=16,
                                                     temperature=0, stream=True))
        text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
        assert len(text) > 10 and "<|im" not in text
        r = client.chat.completions.create(
            model=hf_folder.name, messages=[{"role": "user", "content": "A cat as JSON."}], max_tokens=40,
            temperature=0, response_format={"type": "json_schema", "json_schema": {"name": "cat", "strict": True,
                "schema": {"type": "object", "properties": {"name": {"type": "string"}}, "required": ["name"],
                           "additionalProperties": False}}})
        if r.choices[0].finish_reason == "stop":
            assert set(json.loads(r.choices[0].message.content)) == {"name"}
    finally:
        client.close()
