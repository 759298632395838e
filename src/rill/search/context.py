"""Search results -> the text the model reads, and the model's answer -> the sources it cites.

The results go into the context numbered, and the model is asked to cite them as `[n]`. An
answer cites a source where it writes its marker (`[2]`, `[1, 3]`, `[1][3]`) or its URL; each
citation is one `url_citation` annotation whose indices are the citation's span in the content
(in characters, Python's string indices).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Sequence

from rill.search.providers import SearchResult

# `search_context_size` -> (results used, characters of their snippets in all); medium is the default
CONTEXT_BUDGETS = {"low": (3, 1_200), "medium": (5, 3_000), "high": (8, 8_000)}
_MARKER = re.compile(r"\[(\d+(?:\s*,\s*\d+)*)\]")


@dataclass(frozen=True, slots=True)
class Source:
    number: int  # its [n] in the context
    title: str
    url: str


def within_budget(results: Sequence[SearchResult], size: str) -> list[SearchResult]:
    """The results that fit `search_context_size`: the first few, snippets cut to share the budget."""
    count, chars = CONTEXT_BUDGETS[size]
    used = list(results[:count])
    share = chars // max(1, len(used))
    return [SearchResult(r.title[:200], r.url, _cut(r.snippet, share)) for r in used]


def _cut(text: str, limit: int) -> str:
    if len(text) <= limit:
        return text
    return text[:limit].rsplit(" ", 1)[0] + " …"


def context_text(query: str, results: Sequence[SearchResult], today: str) -> str:
    """The system text that gives the model its sources."""
    if not results:
        return (f"A web search for \"{query}\" (on {today}) found nothing. Say so if the question "
                "needs current information.")
    lines = [f"Web search results for \"{query}\" (searched on {today}):", ""]
    for n, result in enumerate(results, 1):
        lines += [f"[{n}] {result.title}", f"URL: {result.url}", result.snippet, ""]
    lines.append("Use these results to answer. After a sentence that uses a result, cite it by its "
                 "number in square brackets, like [1].")
    return "\n".join(lines)


def sources_of(results: Sequence[SearchResult]) -> tuple[Source, ...]:
    return tuple(Source(n, r.title, r.url) for n, r in enumerate(results, 1))


def citations(content: str, sources: Sequence[Source]) -> list[dict[str, Any]]:
    """The `url_citation` annotations of an answer, in the order they appear."""
    by_number = {s.number: s for s in sources}
    found: list[tuple[int, int, Source]] = []
    for match in _MARKER.finditer(content):
        numbers = [int(n) for n in match.group(1).split(",")]
        cited = [by_number[n] for n in numbers if n in by_number]
        if len(cited) == 1:  # [2], or [2, 9] where only 2 is a source: the whole marker
            found.append((match.start(), match.end(), cited[0]))
        else:  # [1, 3]: each number's own span inside the brackets
            for number in re.finditer(r"\d+", match.group(0)):
                source = by_number.get(int(number.group()))
                if source is not None:
                    found.append((match.start() + number.start(), match.start() + number.end(), source))
    for source in sources:
        start = content.find(source.url)
        while start >= 0:
            found.append((start, start + len(source.url), source))
            start = content.find(source.url, start + len(source.url))
    found.sort(key=lambda f: f[0])
    return [{"type": "url_citation", "url_citation": {"url": s.url, "title": s.title, "start_index": start,
                                                      "end_index": end}} for start, end, s in found]
