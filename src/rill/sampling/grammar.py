"""Constrained decoding with llguidance: `response_format` JSON schemas and tool-call grammars
compiled, and a token mask per step that only lets through tokens that keep the output valid.

A compiled grammar (a string) is cached by its source; each choice gets its own matcher, which
the engine thread advances with every sampled token.
"""

from __future__ import annotations

import contextlib
import functools
from typing import Any, Iterator

import llguidance
import llguidance.numpy as llg_np
import numpy as np
import orjson

# JSON output as compact as the model likes to write it, with no whitespace to wander in.
_JSON_OPTIONS: Any = {"whitespace_flexible": False}


class GrammarError(ValueError):
    """The schema cannot be turned into a grammar; the message says why."""


@contextlib.contextmanager
def _llguidance_errors() -> Iterator[None]:
    """Every failure of llguidance as a GrammarError. Some come as Rust panics, which PyO3 raises
    as a BaseException (seen for a schema with non-ASCII property names): uncaught, one would
    escape the request's error handling, or end the engine thread."""
    try:
        yield
    except GrammarError:
        raise
    except ValueError as exc:
        raise GrammarError(str(exc)) from None
    except BaseException as exc:
        if type(exc).__name__ != "PanicException":
            raise
        raise GrammarError(f"the grammar library failed: {str(exc)[:300]}") from None


class Constraint:
    """One choice's grammar state: the mask for its next token, advanced token by token."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, grammar: str, n_vocab: int):
        with _llguidance_errors():
            self._matcher = llguidance.LLMatcher(tokenizer, grammar, log_level=0)
        self._mask = llg_np.allocate_token_bitmask(1, tokenizer.vocab_size)
        self._n_vocab = n_vocab

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of logits with every token the grammar forbids next set to -inf."""
        with _llguidance_errors():
            llg_np.fill_next_token_bitmask(self._matcher, self._mask)
        bits = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[: self._n_vocab]
        return np.where(bits.astype(bool), logits, np.float32(-np.inf)).astype(np.float32, copy=False)

    def advance(self, token: int) -> None:
        with _llguidance_errors():
            self._matcher.consume_token(token)

    @property
    def done(self) -> bool:
        """The grammar is complete: nothing more may follow."""
        return self._matcher.is_stopped()

    @property
    def error(self) -> str | None:
        return self._matcher.get_error() if self._matcher.is_error() else None


class Grammars:
    """Compiles and caches grammars for one model's vocabulary."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, n_vocab: int):
        self.tokenizer = tokenizer
        self.n_vocab = n_vocab
        self._json = functools.lru_cache(maxsize=256)(self._compile_json)
        self._lark = functools.lru_cache(maxsize=256)(self._compile_lark)

    def json_schema(self, schema: dict[str, Any]) -> str:
        """The grammar for output that is one JSON value valid against schema."""
        # keyed by the exact JSON text: key order matters, properties are generated in schema order
        return self._json(orjson.dumps(schema).decode())

    def lark(self, source: str) -> str:
        """The grammar for a Lark source in llguidance's dialect (tool calls: sampling/tool_format.py)."""
        return self._lark(source)

    def _compile_json(self, schema: str) -> str:
        with _llguidance_errors():
            return self._checked(llguidance.LLMatcher.grammar_from_json_schema(schema, defaults=_JSON_OPTIONS))

    def _compile_lark(self, source: str) -> str:
        with _llguidance_errors():
            return self._checked(llguidance.LLMatcher.grammar_from_lark(source))

    def _checked(self, grammar: str) -> str:
        with _llguidance_errors():
            is_error, messages = llguidance.LLMatcher.validate_grammar_with_warnings(grammar, self.tokenizer)
        if is_error:
            raise GrammarError(messages[0])
        return grammar

    def constraint(self, grammar: str) -> Constraint:
        c = Constraint(self.tokenizer, grammar, self.n_vocab)
        if c.error:
            raise GrammarError(c.error)
        return c
