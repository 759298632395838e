"""Prompts tokenized in groups (rill.prompt_tokens) give exactly the tokens of one llama.cpp call
over the whole prompt, on SmolLM2's real vocabulary and chat template: the groups start at the
control tokens the template wrote, where llama.cpp starts a new piece anyway."""

from __future__ import annotations

from types import SimpleNamespace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from rill.backends.llama_vocab import LlamaVocab
from rill.cli import embedded_model_path
from rill.prompt_tokens import PromptTokenizer
from rill.sampling.template import ChatTemplate

pytestmark = [pytest.mark.e2e]


class VocabBackend:
    """The embedded model's vocabulary, loaded alone, as the part of a backend tokenizing needs."""

    def __init__(self, vocab: LlamaVocab):
        self.vocab = vocab
        self.info = SimpleNamespace(n_vocab=vocab.n_vocab)
        self.tokenize, self.token_bytes, self.control_tokens = vocab.tokenize, vocab.token_bytes, vocab.control_tokens


@pytest.fixture(scope="module")
def smollm2():
    vocab = LlamaVocab.load(embedded_model_path())
    yield PromptTokenizer(VocabBackend(vocab)), vocab, ChatTemplate(vocab.chat_template)
    vocab.close()


words = st.sampled_from(["Hello", " world", "\n", "\n\n", "  ", "\t", "é", "日本", "🙂", "x" * 40, "1234", ".",
                         " <|im_end|>", "<|im_", "<|endoftext|>", "user", "<tool_call>"])
conversations = st.lists(st.tuples(st.sampled_from(["system", "user", "assistant"]),
                                   st.lists(words, max_size=10).map("".join)), min_size=1, max_size=10)


@settings(max_examples=150, deadline=None)
@given(conversation=conversations)
def test_groups_give_llama_cpps_tokens(smollm2, conversation):
    prompts, vocab, template = smollm2
    parts = template.render_parts([{"role": r, "content": c} for r, c in conversation])
    if any(is_message and vocab.tokenize(t, add_bos=False) != vocab.tokenize(t, add_bos=False, parse_special=False)
           for t, is_message in parts):  # control text in a message: each part apart, messages as text
        expected = [tok for t, is_message in parts for tok in vocab.tokenize(t, add_bos=False, parse_special=not is_message)]
    else:
        expected = vocab.tokenize("".join(t for t, _ in parts), add_bos=False)
    assert prompts.tokenize(parts, add_bos=False) == expected


def test_a_prompt_of_many_groups_gives_llama_cpps_tokens(smollm2):
    prompts, vocab, template = smollm2
    parts = template.render_parts([{"role": "user" if i % 2 == 0 else "assistant", "content": f"message {i} é"}
                                   for i in range(2000)])
    assert prompts.tokenize(parts, add_bos=False) == vocab.tokenize("".join(t for t, _ in parts), add_bos=False)
