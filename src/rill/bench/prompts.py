"""Deterministic prompt sets, generated in code (no downloads).

- short: one-line chat questions.
- long: ~500-token user messages (about 2,900 characters of English-like text) plus a question.
- shared-prefix: one long common system prompt (~500 tokens) and a distinct short question each,
  for exercising prefix caches.
- edit: rename one identifier in a ~250-token Python module; `predictions()` gives each prompt's
  original code, for `prediction` (the answer is that code with the one name changed).
- long-answer: ~105-token prompts asking for an essay: answers that run to the cap (128 tokens by
  default), so that a run measures admitting new prompts while long answers decode.
"""

from __future__ import annotations

import random

from rill.bench.edit_code import MODULES

PROMPT_SETS = ("short", "long", "shared-prefix", "edit", "long-answer")

Messages = list[dict[str, str]]

_TOPICS = [
    "photosynthesis", "the water cycle", "binary search", "the French Revolution", "black holes",
    "compound interest", "TCP handshakes", "plate tectonics", "vaccines", "the Pythagorean theorem",
    "hash tables", "supply and demand", "the immune system", "Roman aqueducts", "solar panels",
    "garbage collection", "the printing press", "ocean tides", "neural networks", "bread baking",
]
_ASKS = [
    "Explain {t} in two sentences.", "What is the most common misconception about {t}?",
    "Give me three facts about {t}.", "How would you teach {t} to a ten-year-old?",
    "Why does {t} matter?", "Summarize the history of {t} briefly.",
]
_WORDS = (
    "system data model network signal energy process river market window theory method garden "
    "engine language history memory pattern surface circuit balance harbor letter journey "
    "measure number quiet rapid simple careful bright distant gentle heavy narrow early modern "
    "between across through under before after while because although therefore however "
    "builds carries shapes follows changes records observes explains connects divides"
).split()

# SmolLM2's tokenizer gives ~5.9 characters per token on this text: 2,900 characters ~ 500 tokens.
LONG_CHARS = 2900


def _text(rng: random.Random, min_chars: int) -> str:
    sentences: list[str] = []
    size = 0
    while size < min_chars:
        words = [rng.choice(_WORDS) for _ in range(rng.randint(8, 16))]
        sentence = " ".join(words).capitalize() + "."
        sentences.append(sentence)
        size += len(sentence) + 1
    return " ".join(sentences)


def _question(i: int) -> str:
    topic = _TOPICS[i % len(_TOPICS)]
    ask = _ASKS[(i // len(_TOPICS)) % len(_ASKS)]
    return ask.format(t=topic) + ("" if i < len(_TOPICS) * len(_ASKS) else f" (variant {i})")


SHARED_SYSTEM_PROMPT = (
    "You are a careful, concise assistant for a technical reference desk. Follow these rules. "
    + _text(random.Random(1234), LONG_CHARS)
)


def _edit_case(i: int) -> tuple[str, str, str]:
    """(old name, new name, code) of edit prompt i; past the 12 distinct cases, the new name
    gets a suffix so that every prompt differs."""
    cases = [(old, new, code) for code, names in MODULES for old, new in names]
    old, new, code = cases[i % len(cases)]
    return old, new if i < len(cases) else f"{new}_{i // len(cases)}", code


def predictions(kind: str, n: int) -> list[str | None]:
    """What each of make_prompts(kind, n)'s answers is expected to be mostly made of: the edit
    set's original code (in the fence the answer is asked for); None for the other sets."""
    if kind != "edit":
        return [None] * n
    return [f"```python\n{_edit_case(i)[2]}```" for i in range(n)]


EDIT_SYSTEM_PROMPT = "You are a code editor. Output the full file with the requested change and nothing else."


def make_prompts(kind: str, n: int) -> list[Messages]:
    """`n` message lists of prompt set `kind`, identical on every call."""
    if kind not in PROMPT_SETS:
        raise ValueError(f"unknown prompt set {kind!r}; choose from {', '.join(PROMPT_SETS)}")
    if n < 0:
        raise ValueError("n must be >= 0")
    out: list[Messages] = []
    for i in range(n):
        if kind == "short":
            out.append([{"role": "user", "content": _question(i)}])
        elif kind == "long":
            body = _text(random.Random(10_000 + i), LONG_CHARS)
            out.append([{"role": "user",
                         "content": f"Read the following notes.\n\n{body}\n\n{_question(i)}"}])
        elif kind == "long-answer":
            topic = _TOPICS[i % len(_TOPICS)]
            variant = "" if i < len(_TOPICS) else f" (draft {i // len(_TOPICS) + 1})"
            out.append([{"role": "user", "content": (
                f"You are writing a chapter for a textbook{variant}. Write a detailed essay of at least 600 "
                f"words about {topic}. Start with an introduction, then write three long sections with "
                "headings (history, how it works, why it matters), each with several paragraphs and "
                "examples, and end with a conclusion. Do not stop early and do not summarise: write every "
                "section in full.")}])
        elif kind == "edit":
            old, new, code = _edit_case(i)
            out.append([{"role": "system", "content": EDIT_SYSTEM_PROMPT},
                        {"role": "user", "content": f"```python\n{code}```\nChange: rename `{old}` to `{new}`."}])
        else:
            out.append([{"role": "system", "content": SHARED_SYSTEM_PROMPT},
                        {"role": "user", "content": _question(i)}])
    return out
