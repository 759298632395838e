"""Model name -> the model that serves it. Today: local models, each with its own engine."""

from __future__ import annotations

import time
from dataclasses import dataclass, field

from rill.backends.base import ModelInfo
from rill.engine.engine import Engine
from rill.errors import ModelNotFound, NotReady
from rill.sampling.template import ChatTemplate


@dataclass(slots=True)
class LocalModel:
    id: str
    engine: Engine
    template: ChatTemplate
    aliases: frozenset[str] = frozenset()
    created: int = field(default_factory=lambda: int(time.time()))

    @property
    def info(self) -> ModelInfo:
        return self.engine.backend.info

    def tokenize_prompt(self, prompt: str) -> list[int]:
        """Rendered chat prompt -> tokens, adding BOS only when the template did not."""
        info = self.info
        add_bos = info.add_bos and not (info.bos_token and prompt.startswith(info.bos_token))
        return self.engine.backend.tokenize(prompt, add_bos=add_bos)


class Router:
    """Resolves the `model` field. A model being loaded answers 503 until it is ready."""

    def __init__(self) -> None:
        self._models: dict[str, LocalModel] = {}
        self._loading: list[str] = []
        self.default_id: str | None = None

    def expect(self, model_id: str) -> None:
        """Announce a model that is still loading (so /health and requests answer 503)."""
        self._loading.append(model_id)
        if self.default_id is None:
            self.default_id = model_id

    def add(self, model: LocalModel) -> None:
        for name in (model.id, *model.aliases):
            self._models[name] = model
        if model.id in self._loading:
            self._loading.remove(model.id)
        if self.default_id is None:
            self.default_id = model.id

    @property
    def is_ready(self) -> bool:
        return not self._loading and bool(self._models)

    def resolve(self, name: str | None) -> LocalModel:
        if name is None or name == "":
            name = self.default_id
        if name in self._models:
            return self._models[name]
        if name in self._loading or (name is None and self._loading):
            raise NotReady("the model is still loading; retry when /health answers 200")
        raise ModelNotFound(f"The model `{name}` does not exist. GET /v1/models lists the served models.",
                            param="model")

    def models(self) -> list[LocalModel]:
        return list({id(m): m for m in self._models.values()}.values())

    def close(self) -> None:
        for model in self.models():
            model.engine.stop()
