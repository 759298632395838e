"""Constrained decoding with llguidance: `response_format` JSON schemas and tool-call grammars
compiled, and a token mask per step that only lets through tokens that keep the output valid.

A compiled grammar is cached by its source; each choice gets its own copy of its matcher, which
the engine thread advances with every sampled token. Compiling has a size budget (symbols and
source bytes) and happens while the request is planned, off the event loop, so a grammar that
takes a second to compile delays only its own request, and a failure is a 400 there.
"""

from __future__ import annotations

import collections
import contextlib
from typing import Any, Callable, Iterator

import llguidance
import llguidance.numpy as llg_np
import numpy as np
import orjson

from rill.sampling.closed_objects import closed
from rill.sampling.repeated_calls import RepeatedCalls

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


# The size budget of one grammar. llguidance's default (500,000 symbols) let a 20,000-object
# `enum` run 3.7 s into a Rust assertion (symbols must fit in 16 bits); at 50,000 a 5,000-object
# enum still compiles (0.6 s on 2 cores) and anything larger stops with "grammar size too big".
# The lexer's fuel limits (llguidance's defaults) bound the time of its regular expressions.
MAX_GRAMMAR_SYMBOLS = 50_000
# A schema or Lark source longer than this is refused before compiling: such a grammar cannot be
# within the symbol budget, and the compile would spend seconds finding out.
MAX_SOURCE_BYTES = 1 << 20
CACHED_GRAMMARS = 64  # compiled grammars kept, most recently used first (and recent failures)


class Grammar:
    """A compiled grammar: a matcher at its start, copied for every choice that follows it
    (a copy takes microseconds; compiling took up to a second). A tool turn's grammar also has
    its call markup: its constraints end the turn at a repeated call (repeated_calls.py)."""

    __slots__ = ("text", "_matcher", "_mask_size", "_n_vocab", "_tokenizer", "call_marks")

    def __init__(self, text: str, matcher: llguidance.LLMatcher, mask_size: int, n_vocab: int,
                 tokenizer: llguidance.LLTokenizer | None = None, call_marks: tuple[str, str] | None = None):
        self.text = text  # llguidance's grammar, as compiled
        self._matcher = matcher
        self._mask_size = mask_size
        self._n_vocab = n_vocab
        self._tokenizer = tokenizer
        self.call_marks = call_marks

    def constraint(self) -> Constraint:
        calls = RepeatedCalls(*self.call_marks) if self.call_marks and self._tokenizer else None
        with _llguidance_errors():
            return Constraint(self._matcher.deep_copy(), self._mask_size, self._n_vocab, self._tokenizer, calls)


class Constraint:
    """One choice's grammar state: the mask for its next token, advanced token by token."""

    def __init__(self, matcher: llguidance.LLMatcher, mask_size: int, n_vocab: int,
                 tokenizer: llguidance.LLTokenizer | None = None, calls: RepeatedCalls | None = None):
        self._matcher = matcher
        self._mask = llg_np.allocate_token_bitmask(1, mask_size)
        self._n_vocab = n_vocab
        self._tokenizer = tokenizer
        self._calls = calls

    def mask(self, logits: np.ndarray) -> np.ndarray:
        """A copy of logits with every token the grammar forbids next set to -inf."""
        with _llguidance_errors():
            llg_np.fill_next_token_bitmask(self._matcher, self._mask)
        bits = np.unpackbits(self._mask.view(np.uint8), bitorder="little")[: self._n_vocab]
        return np.where(bits.astype(bool), logits, np.float32(-np.inf)).astype(np.float32, copy=False)

    def advance(self, token: int) -> None:
        with _llguidance_errors():
            self._matcher.consume_token(token)
        if self._calls is not None and self._tokenizer is not None:
            self._calls.observe(self._tokenizer.decode_bytes([token]))

    @property
    def done(self) -> bool:
        """The grammar is complete (nothing more may follow), or a tool turn's last call repeats
        an earlier one."""
        return self._matcher.is_stopped() or (self._calls is not None and self._calls.repeated)

    @property
    def error(self) -> str | None:
        return self._matcher.get_error() if self._matcher.is_error() else None


class Grammars:
    """Compiles grammars for one model's vocabulary and keeps the recent ones (and the recent
    failures, so that a client repeating a bad schema costs nothing). Compiling happens in the
    caller's thread, which must not be the event loop's: llguidance drops the GIL meanwhile."""

    def __init__(self, tokenizer: llguidance.LLTokenizer, n_vocab: int, *, max_symbols: int = MAX_GRAMMAR_SYMBOLS):
        self.tokenizer = tokenizer
        self.n_vocab = n_vocab
        self._limits = llguidance.LLParserLimits(max_grammar_size=max_symbols, verbose_errors=False)
        self._cache: collections.OrderedDict[str, Grammar | GrammarError] = collections.OrderedDict()

    def json_schema(self, schema: dict[str, Any]) -> Grammar:
        """The grammar for output that is one JSON value valid against schema; an object schema
        with `properties` allows no other keys unless it says so (closed_objects.py)."""
        # keyed by the exact JSON text: key order matters, properties are generated in schema order
        source = orjson.dumps(closed(schema)).decode()
        return self._get("json:" + source, lambda: llguidance.LLMatcher.grammar_from_json_schema(
            source, defaults=_JSON_OPTIONS), len(source))

    def lark(self, source: str, call_marks: tuple[str, str] | None = None) -> Grammar:
        """The grammar for a Lark source in llguidance's dialect (tool calls: sampling/tool_format.py,
        whose call markup, as call_marks, makes a repeated call end the turn)."""
        return self._get(f"lark:{call_marks}:{source}", lambda: llguidance.LLMatcher.grammar_from_lark(source),
                         len(source), call_marks)

    def _get(self, key: str, translate: Callable[[], str], size: int,
             call_marks: tuple[str, str] | None = None) -> Grammar:
        # Planning threads share the cache without a lock: each OrderedDict operation is atomic
        # (C, under the GIL), and a lost race at worst compiles a grammar twice.
        found = self._cache.get(key)
        if found is not None:
            with contextlib.suppress(KeyError):
                self._cache.move_to_end(key)
        else:
            try:
                found = self._compile(translate, size, call_marks)
            except GrammarError as exc:
                found = exc
            self._cache[key] = found
            while len(self._cache) > CACHED_GRAMMARS:
                with contextlib.suppress(KeyError):
                    self._cache.popitem(last=False)
        if isinstance(found, GrammarError):
            raise GrammarError(str(found))
        return found

    def _compile(self, translate: Callable[[], str], size: int, call_marks: tuple[str, str] | None) -> Grammar:
        if size > MAX_SOURCE_BYTES:
            raise GrammarError(f"the grammar is {size:,} bytes long; this server compiles at most "
                               f"{MAX_SOURCE_BYTES:,}")
        with _llguidance_errors():
            text = translate()
            matcher = llguidance.LLMatcher(self.tokenizer, text, log_level=0, limits=self._limits)
        if matcher.is_error():
            raise GrammarError(_short(matcher.get_error()))
        return Grammar(text, matcher, self.tokenizer.vocab_size, self.n_vocab, self.tokenizer, call_marks)


def _short(message: str) -> str:
    """llguidance's message without a Rust backtrace."""
    return message.split("\n<backtrace>")[0].strip()[:500]
