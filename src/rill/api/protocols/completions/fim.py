"""Fill-in-the-middle (`suffix`): the model's FIM control tokens, found by name in its vocabulary,
and the prompt they make: prefix, suffix, then the middle to generate (PSM order, as llama.cpp's
/infill and the StarCoder, Qwen2.5-Coder and SmolLM2 families were trained).

A set of names counts only when each name is one control token of the vocabulary (one token with
control-token text parsed, several as plain text), so a model that merely spells the names as
text has no FIM. llama.cpp falls back to the same names when a GGUF file's metadata lacks the
`tokenizer.ggml.fim_*_token_id` keys; looking them up by name answers the same way for every
backend (llama.cpp, the torch backend's GGUF or Hugging Face vocabularies)."""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from typing import Protocol

# (prefix, suffix, middle) names, as llama.cpp's vocabulary loader knows them
FIM_NAMES: tuple[tuple[str, str, str], ...] = (
    ("<fim_prefix>", "<fim_suffix>", "<fim_middle>"),  # StarCoder, SmolLM, Granite code
    ("<|fim_prefix|>", "<|fim_suffix|>", "<|fim_middle|>"),  # Qwen2.5-Coder
    ("<fim-prefix>", "<fim-suffix>", "<fim-middle>"),
    ("<｜fim▁begin｜>", "<｜fim▁hole｜>", "<｜fim▁end｜>"),  # DeepSeek Coder
    ("<|code_prefix|>", "<|code_suffix|>", "<|code_middle|>"),  # GLM-4
    ("<PRE>", "<SUF>", "<MID>"),  # CodeLlama
)


class Vocabulary(Protocol):
    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]: ...


@dataclass(frozen=True, slots=True)
class FimTokens:
    prefix: int
    suffix: int
    middle: int
    names: tuple[str, str, str]

    def prompt(self, prefix: list[int] | tuple[int, ...], suffix: list[int] | tuple[int, ...],
               bos: int | None = None) -> tuple[int, ...]:
        """[BOS] <prefix> prefix <suffix> suffix <middle>: the model writes the middle next."""
        head = (bos,) if bos is not None else ()
        return (*head, self.prefix, *prefix, self.suffix, *suffix, self.middle)


def _control_token(vocab: Vocabulary, name: str) -> int | None:
    ids = vocab.tokenize(name, add_bos=False, parse_special=True)
    if len(ids) != 1 or vocab.tokenize(name, add_bos=False, parse_special=False) == ids:
        return None
    return ids[0]


def find_fim(vocab: Vocabulary) -> FimTokens | None:
    for names in FIM_NAMES:
        ids = [_control_token(vocab, name) for name in names]
        if all(i is not None for i in ids):
            return FimTokens(ids[0], ids[1], ids[2], names)  # type: ignore[arg-type]
    return None


_found: weakref.WeakKeyDictionary[object, FimTokens | None] = weakref.WeakKeyDictionary()


def fim_tokens(vocab: Vocabulary) -> FimTokens | None:
    """The vocabulary's FIM tokens, or None; looked up once per backend."""
    try:
        return _found[vocab]
    except KeyError:
        found = _found[vocab] = find_fim(vocab)
        return found
    except TypeError:  # not weakly referenceable: no cache
        return find_fim(vocab)


def no_fim_message(model_id: str) -> str:
    names = ", ".join("/".join(n) for n in FIM_NAMES[:2])
    return (f"`suffix` (fill-in-the-middle) needs a model whose vocabulary has FIM control tokens "
            f"(such as {names}); {model_id} has none. Send the request without `suffix`.")
