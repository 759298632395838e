"""Model name -> the model that serves it: local models, each with its own engine, and upstream
models, forwarded to an OpenAI-compatible server. A model's fallbacks are tried, in order, when it
cannot take a request (before the first byte reaches the client)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

from rill.backends.base import ModelInfo
from rill.engine.engine import Engine
from rill.errors import ModelNotFound, NotReady
from rill.prompt_tokens import Parts, PromptTokenizer
from rill.sampling.template import ChatTemplate
from rill.upstreams.replica_set import ReplicaSet


@dataclass(slots=True)
class LocalModel:
    id: str
    engine: Engine
    template: ChatTemplate
    aliases: frozenset[str] = frozenset()
    fallbacks: tuple[str, ...] = ()
    default_temperature: float | None = None  # for requests that send none (--temperature)
    default_max_tokens: int | None = None  # the cap of requests that set none (--max-tokens)
    created: int = field(default_factory=lambda: int(time.time()))
    prompts: PromptTokenizer = field(init=False, repr=False)

    def __post_init__(self) -> None:
        self.prompts = PromptTokenizer(self.engine.backend)

    @property
    def info(self) -> ModelInfo:
        return self.engine.backend.info

    def tokenize_text(self, text: str, *, add_bos: bool = False) -> list[int]:
        """Plain text -> tokens: control-token text stays text."""
        return self.engine.backend.tokenize(text, add_bos=add_bos, parse_special=False)

    def token_bytes(self, token: int) -> bytes:
        """What a token adds to the output (b"" for control tokens)."""
        return self.engine.backend.token_bytes(token)

    def tokenize_prompt(self, parts: Parts, *, add_bos: bool | None = None, limit: int | None = None,
                        cancelled: Callable[[], bool] = lambda: False) -> list[int]:
        """Rendered prompt parts (text, is_message_text) -> tokens, BOS added only when the
        template did not write it (`add_bos` True/False: whatever the template wrote). Control-token
        text counts only where the template put it, so nobody can forge another role's turn; more
        than `limit` tokens raise TooLong, and `cancelled` stops the work (Cancelled) when nobody
        waits for it (prompt_tokens.py)."""
        info = self.info
        if add_bos is None:
            add_bos = info.add_bos and not (info.bos_token and parts and parts[0][0].startswith(info.bos_token))
        return self.prompts.tokenize(parts, add_bos=add_bos, limit=limit, cancelled=cancelled)


@dataclass(slots=True)
class UpstreamModel:
    id: str
    upstream: ReplicaSet  # its replicas (one for a plain base_url)
    aliases: frozenset[str] = frozenset()
    fallbacks: tuple[str, ...] = ()
    created: int = field(default_factory=lambda: int(time.time()))


Model = LocalModel | UpstreamModel


class Router:
    """Resolves the `model` field. While a model is loading, a name that is not (yet) known
    answers 503 with Retry-After rather than 404: it may be an alias of the loading model."""

    def __init__(self) -> None:
        self._models: dict[str, Model] = {}
        self._loading: list[str] = []
        self.default_id: str | None = None

    def expect(self, model_id: str) -> None:
        """Announce a model that is still loading (so /health and requests answer 503)."""
        self._loading.append(model_id)
        if self.default_id is None:
            self.default_id = model_id

    def add(self, model: Model) -> None:
        for name in (model.id, *model.aliases):
            self._models[name] = model
        if model.id in self._loading:
            self._loading.remove(model.id)
        if self.default_id is None:
            self.default_id = model.id

    @property
    def loading(self) -> list[str]:
        """The models announced and not loaded yet."""
        return list(self._loading)

    @property
    def is_ready(self) -> bool:
        return not self._loading and bool(self._models)

    def unavailable(self) -> dict[str, str]:
        """Local models whose engine stalled or died -> why."""
        return {m.id: reason for m in self.local_models() if (reason := m.engine.unavailable) is not None}

    def resolve(self, name: str | None) -> Model:
        name = name or self.default_id
        if name in self._models:
            return self._models[name]
        if name in self._loading:
            raise NotReady(f"The model `{name}` is still loading; retry when GET /health answers 200.")
        if self._loading:
            raise NotReady(f"The model `{name}` is not known yet: models are still loading "
                           f"({', '.join(self._loading)}); retry when GET /health answers 200.")
        raise ModelNotFound(f"The model `{name}` does not exist. GET /v1/models lists the served models.",
                            param="model")

    def candidates(self, name: str | None) -> list[Model]:
        """The model `name` resolves to, then its fallbacks that are ready; resolving the first
        raises as resolve() does."""
        first = self.resolve(name)
        out = [first]
        for fallback in first.fallbacks:
            model = self._models.get(fallback)
            if model is not None and model not in out:
                out.append(model)
        return out

    def models(self) -> list[Model]:
        # list() copies in one step: the loader thread may add a model meanwhile
        return list({id(m): m for m in list(self._models.values())}.values())

    def local_models(self) -> list[LocalModel]:
        return [m for m in self.models() if isinstance(m, LocalModel)]

    def close(self) -> None:
        """Stop the engines (upstream clients are closed by aclose())."""
        for model in self.local_models():
            model.engine.stop()

    async def aclose(self) -> None:
        for model in self.models():
            if isinstance(model, UpstreamModel):
                await model.upstream.aclose()
