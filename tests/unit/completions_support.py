"""Shared helpers of the legacy completions unit tests: models over the fake backend (one with
fill-in-the-middle tokens in its vocabulary, one that adds BOS) and request bodies."""

from __future__ import annotations

import dataclasses
from typing import Any

from rill.api.protocols.completions.schemas import CompletionRequest
from rill.backends.fake import IM_START, FakeBackend
from rill.engine.engine import Engine
from rill.router import LocalModel
from rill.sampling.template import ChatTemplate

FIM = {"<fim_prefix>": 258, "<fim_suffix>": 259, "<fim_middle>": 260}


class FimBackend(FakeBackend):
    """The fake model with StarCoder's three FIM control tokens after its own 258."""

    def __init__(self, **kwargs: Any):
        super().__init__(**kwargs)
        self.info = dataclasses.replace(self.info, n_vocab=261)

    def tokenize(self, text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
        if not parse_special:
            return super().tokenize(text, add_bos=add_bos, parse_special=False)
        out: list[int] = []
        rest = text
        while rest:
            cut = min(((rest.find(name), name) for name in FIM if name in rest), default=None)
            if cut is None:
                out += super().tokenize(rest, add_bos=False)
                break
            at, name = cut
            out += super().tokenize(rest[:at], add_bos=False) + [FIM[name]]
            rest = rest[at + len(name):]
        return out

    def control_tokens(self) -> tuple[str, ...]:
        return (*super().control_tokens(), *FIM)


def model_on(backend: FakeBackend | None = None, *, add_bos: bool = False) -> LocalModel:
    """A LocalModel whose engine thread never starts: preparing prompts only tokenizes. With
    `add_bos`, the model adds its BOS (<|im_start|>, id 256) to raw text."""
    backend = backend or FakeBackend()
    if add_bos:
        backend.info = dataclasses.replace(backend.info, add_bos=True, bos_token="<|im_start|>")
        tokenize = backend.tokenize  # the fake never adds BOS itself

        def with_bos(text: str, *, add_bos: bool, parse_special: bool = True) -> list[int]:
            return [IM_START] * add_bos + tokenize(text, add_bos=False, parse_special=parse_special)

        backend.tokenize = with_bos  # type: ignore[method-assign]
    return LocalModel(id="fake", engine=Engine(backend), template=ChatTemplate(backend.info.chat_template))


def body(prompt: Any = "hi", **fields: Any) -> CompletionRequest:
    return CompletionRequest.model_validate({"prompt": prompt, **fields})
