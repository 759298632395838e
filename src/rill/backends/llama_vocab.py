"""A GGUF model's tokenizer and chat template as llama.cpp reads them from the file's metadata:
shared by the llama.cpp backend and, loaded alone (vocab_only), by the torch backend, so both
tokenize a GGUF model exactly alike."""

from __future__ import annotations

import ctypes
from pathlib import Path
from typing import Any

import llama_cpp as ll
import numpy as np

from rill.backends.base import BackendError


class LlamaVocab:
    def __init__(self, model: Any, *, owned: bool = False):
        self._model = model  # a llama_model pointer
        self._owned = owned  # loaded by load(): freed by close()
        self._vocab = ll.llama_model_get_vocab(model)
        self.n_vocab = ll.llama_vocab_n_tokens(self._vocab)
        self._pieces = [self._piece(t, special=False) for t in range(self.n_vocab)]
        self._eog = np.array([ll.llama_vocab_is_eog(self._vocab, t) for t in range(self.n_vocab)])
        self._guidance: Any = None
        template = ll.llama_model_chat_template(model, None)
        self.chat_template = template.decode("utf-8") if template else None
        bos, eos = ll.llama_vocab_bos(self._vocab), ll.llama_vocab_eos(self._vocab)
        self.bos_token = self._piece(bos, special=True).decode("utf-8", "replace") if bos >= 0 else ""
        self.eos_token = self._piece(eos, special=True).decode("utf-8", "replace") if eos >= 0 else ""
        self.add_bos = bool(ll.llama_vocab_get_add_bos(self._vocab))

    @classmethod
    def load(cls, path: Path) -> LlamaVocab:
        """The vocabulary alone, without the weights."""
        from rill.backends.local import init_llama

        init_llama()
        params = ll.llama_model_default_params()
        params.vocab_only = True
        model = ll.llama_model_load_from_file(str(path).encode(), params)
        if not model:
            raise BackendError(f"llama.cpp could not read the vocabulary of {path} (is it a GGUF model file?)")
        return cls(model, owned=True)

    def _piece(self, token: int, *, special: bool) -> bytes:
        buf = ctypes.create_string_buffer(64)
        n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        if n < 0:
            buf = ctypes.create_string_buffer(-n)
            n = ll.llama_token_to_piece(self._vocab, token, buf, len(buf), 0, special)
        return buf.raw[:n]

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
        data = text.encode("utf-8")
        cap = len(data) + 2
        buf = (ll.llama_token * cap)()
        n = ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, parse_special)
        if n < 0:  # pragma: no cover - cap is an upper bound for byte-level vocabularies
            cap = -n
            buf = (ll.llama_token * cap)()
            n = ll.llama_tokenize(self._vocab, data, len(data), buf, cap, add_bos, parse_special)
        return list(buf[:n])

    def token_bytes(self, token: int) -> bytes:
        return self._pieces[token]

    def is_end_of_generation(self, token: int) -> bool:
        return bool(self._eog[token])

    def control_tokens(self) -> tuple[str, ...]:
        """Control (and unknown) tokens' texts: what llama_tokenize parses only with
        parse_special. A token that strips the whitespace to its left reaches into the text
        before it, so a vocabulary with one promises nothing (empty)."""
        out = []
        for token in range(self.n_vocab):
            attr = ll.llama_vocab_get_attr(self._vocab, token)
            if attr & (ll.LLAMA_TOKEN_ATTR_CONTROL | ll.LLAMA_TOKEN_ATTR_UNKNOWN):
                if attr & ll.LLAMA_TOKEN_ATTR_LSTRIP:
                    return ()
                text = self._piece(token, special=True).decode("utf-8", "replace")
                if text:
                    out.append(text)
        return tuple(out)

    def guidance_tokenizer(self) -> Any:
        if self._guidance is None:
            from llguidance.llamacpp import lltokenizer_from_vocab  # ~1 s: only when first needed

            self._guidance = lltokenizer_from_vocab(self._vocab)
        return self._guidance

    def close(self) -> None:
        if self._owned and self._model:
            ll.llama_model_free(self._model)
        self._model = None


class VocabMethods:
    """The Backend protocol's vocabulary methods, answered by the backend's `vocab`."""

    vocab: LlamaVocab

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
        return self.vocab.tokenize(text, add_bos=add_bos, parse_special=parse_special)

    def token_bytes(self, token: int) -> bytes:
        return self.vocab.token_bytes(token)

    def is_end_of_generation(self, token: int) -> bool:
        return self.vocab.is_end_of_generation(token)

    def control_tokens(self) -> tuple[str, ...]:
        return self.vocab.control_tokens()

    def guidance_tokenizer(self) -> Any:
        return self.vocab.guidance_tokenizer()
