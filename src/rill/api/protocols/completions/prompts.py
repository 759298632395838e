"""`prompt` -> the token sequences the model sees, one per prompt, each checked to fit the context
with its completion before anything runs.

The model sees a prompt raw: no chat template. Text is tokenized with control-token text parsed
(`<|im_start|>` in a prompt is that control token, as llama-server and vLLM read a raw prompt),
with BOS first when the model adds BOS to raw text (its `add_bos`) and the text does not already
start with the BOS token's text. Token ids are taken exactly as sent, nothing added. With
`suffix`, the prompt is the FIM prefix (fim.py); prefix and suffix text are then tokenized as
plain text, as llama.cpp's infill does."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

from rill.api.protocols.completions.fim import fim_tokens, no_fim_message
from rill.errors import ContextLengthExceeded, InvalidRequest
from rill.prompt_tokens import TooLong
from rill.router import LocalModel

# The most prompts one request may carry (OpenAI's embeddings take at most 2,048 inputs; its
# legacy completions document no bound). They run a few at a time (see limits.py).
MAX_PROMPTS = 2048


@dataclass(frozen=True, slots=True)
class RawPrompt:
    """One prompt as sent: text or token ids; `where` names it (`prompt`, `prompt[2]`)."""

    where: str
    text: str | None = None
    tokens: tuple[int, ...] | None = None


@dataclass(frozen=True, slots=True)
class ReadyPrompt:
    where: str
    tokens: tuple[int, ...]  # exactly what the model reads
    echo: str  # the prompt as `echo` shows it: the text as sent, token ids as their text


def split_prompts(prompt: str | list[str] | list[int] | list[list[int]]) -> list[RawPrompt]:
    """The `prompt` field's prompts, in order (a list of texts or of token lists: one each)."""
    if isinstance(prompt, str):
        return [RawPrompt("prompt", text=prompt)]
    if not prompt:
        raise InvalidRequest("`prompt` is an empty list; send a string, a list of strings, token ids "
                             "or a list of token-id lists.", param="prompt")
    if len(prompt) > MAX_PROMPTS and not isinstance(prompt[0], int):
        raise InvalidRequest(f"`prompt` holds {len(prompt)} prompts; at most {MAX_PROMPTS} per request.",
                             param="prompt")
    first = prompt[0]
    if isinstance(first, int):
        return [RawPrompt("prompt", tokens=tuple(prompt))]  # type: ignore[arg-type]
    if isinstance(first, str):
        return [RawPrompt(f"prompt[{i}]", text=p) for i, p in enumerate(prompt)]  # type: ignore[misc]
    out = []
    for i, ids in enumerate(prompt):
        if not ids:
            raise InvalidRequest(f"`prompt[{i}]` is an empty token list.", param=f"prompt[{i}]")
        out.append(RawPrompt(f"prompt[{i}]", tokens=tuple(ids)))  # type: ignore[arg-type]
    return out


def _too_long(n_ctx: int, where: str, at_least: int, what: str = "") -> ContextLengthExceeded:
    return ContextLengthExceeded(
        f"This model's maximum context length is {n_ctx} tokens. However, your prompt (`{where}`{what}) "
        f"resulted in at least {at_least} tokens, leaving no room for a completion. Please shorten "
        "the prompt.", param=where)


def check_fits(where: str, num_prompt: int, max_tokens: int, n_ctx: int) -> None:
    """A 400 context_length_exceeded unless the prompt and its completion cap fit the context."""
    if num_prompt >= n_ctx:
        raise _too_long(n_ctx, where, num_prompt)
    if num_prompt + max_tokens > n_ctx:
        raise ContextLengthExceeded(
            f"This model's maximum context length is {n_ctx} tokens. However, you requested "
            f"{num_prompt + max_tokens} tokens ({num_prompt} in the prompt `{where}`, {max_tokens} for the "
            "completion). Please reduce the prompt or `max_tokens`.", param="max_tokens")


def _check_ids(where: str, tokens: Sequence[int], n_vocab: int) -> None:
    for i, token in enumerate(tokens):
        if not 0 <= token < n_vocab:
            at = f"{where}[{i}]"
            raise InvalidRequest(f"`{at}`: {token} is not a token id of this model (0..{n_vocab - 1}; "
                                 "POST /tokenize finds ids).", param=at)


def _bos(model: LocalModel) -> int | None:
    """The model's BOS token id, when its BOS text is one token."""
    text = model.info.bos_token
    ids = model.engine.backend.tokenize(text, add_bos=False, parse_special=True) if text else []
    return ids[0] if len(ids) == 1 else None


def _text_tokens(model: LocalModel, raw: RawPrompt, *, plain: bool, add_bos: bool, limit: int,
                 cancelled: Callable[[], bool]) -> list[int]:
    """Text -> tokens (`plain`: control-token text stays text), at most `limit` of them."""
    assert raw.text is not None
    try:
        return model.tokenize_prompt([(raw.text, plain)], add_bos=add_bos, limit=limit, cancelled=cancelled)
    except TooLong as exc:
        raise _too_long(model.info.n_ctx, raw.where, exc.at_least) from None


def _echo_text(model: LocalModel, raw: RawPrompt) -> str:
    if raw.text is not None:
        return raw.text
    assert raw.tokens is not None
    return b"".join(model.token_bytes(t) for t in raw.tokens).decode("utf-8", "replace")


def prepare(model: LocalModel, raw: RawPrompt, *, max_tokens: int, suffix: str | None = None,
            cancelled: Callable[[], bool] = lambda: False) -> ReadyPrompt:
    """One prompt's tokens (with `suffix`: its FIM prompt), or a 400 naming it: an id outside the
    vocabulary, an empty prompt for a model without BOS, a prompt that does not fit the context
    with `max_tokens` more."""
    info = model.info
    n_ctx = info.n_ctx
    if raw.tokens is not None:
        _check_ids(raw.where, raw.tokens, info.n_vocab)
        if len(raw.tokens) >= n_ctx:
            raise _too_long(n_ctx, raw.where, len(raw.tokens))
    if suffix:
        fim = fim_tokens(model.engine.backend)
        if fim is None:
            raise InvalidRequest(no_fim_message(model.id), param="suffix")
        if raw.tokens is not None:
            prefix: list[int] | tuple[int, ...] = raw.tokens
        else:
            prefix = _text_tokens(model, raw, plain=True, add_bos=False, limit=n_ctx - 1, cancelled=cancelled)
        room = n_ctx - 1 - 4 - len(prefix)  # BOS, the three FIM tokens and one generated token
        try:
            tail = model.tokenize_prompt([(suffix, True)], add_bos=False, limit=max(room, 0), cancelled=cancelled)
        except TooLong as exc:
            raise _too_long(n_ctx, raw.where, len(prefix) + 4 + exc.at_least, " with `suffix`") from None
        bos = _bos(model) if info.add_bos and raw.tokens is None else None
        tokens = fim.prompt(prefix, tail, bos)
    elif raw.tokens is not None:
        tokens = raw.tokens
    else:
        assert raw.text is not None
        starts_with_bos = bool(info.bos_token) and raw.text.startswith(info.bos_token)
        tokens = tuple(_text_tokens(model, raw, plain=False, add_bos=info.add_bos and not starts_with_bos,
                                    limit=n_ctx - 1, cancelled=cancelled))
        if not tokens:  # "": the start of a document, as OpenAI reads an empty prompt
            bos = _bos(model)
            if bos is None:
                raise InvalidRequest(f"`{raw.where}` is empty, and this model has no BOS token to start a "
                                     "document with; send some text.", param=raw.where)
            tokens = (bos,)
    check_fits(raw.where, len(tokens), max_tokens, n_ctx)
    return ReadyPrompt(raw.where, tuple(tokens), _echo_text(model, raw))
