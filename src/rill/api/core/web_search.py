"""A protocol's web search tool on a local model (Responses' `web_search`, Messages'
`web_search_*`, with a [search] provider): one search of the last user message, its results
(within a context budget) as system text for the prompt, the sources an answer may cite, and
what the span records of it. Chat's `web_search_options` has its own wire-level form
(protocols/chat/web_search.py)."""

from __future__ import annotations

import datetime
from dataclasses import dataclass
from typing import Any, Callable, Sequence

from rill.api.core.request import Message
from rill.errors import InvalidRequest
from rill.search.context import CONTEXT_BUDGETS, Source, context_text, sources_of, within_budget
from rill.search.providers import Location, SearchProvider, SearchResult

MAX_QUERY_CHARS = 400  # the query: the last user message's text, cut


@dataclass(frozen=True, slots=True)
class Searched:
    query: str
    text: str  # the results, numbered, for the system prompt
    sources: tuple[Source, ...]
    record: dict[str, Any]  # the span's meta["web_search"]


def last_user_text(messages: Sequence[Message], param: str) -> str:
    for message in reversed(messages):
        if message.role == "user":
            text = " ".join(message.text.split())
            if text:
                return text[:MAX_QUERY_CHARS]
    raise InvalidRequest("The web search tool searches the last user message's text, and there is none.",
                         param=param)


def location_of(place: dict[str, Any] | None) -> Location | None:
    """A client's approximate location (city, region, country, timezone) as search hints."""
    place = place or {}
    if not any(isinstance(place.get(k), str) for k in ("city", "region", "country", "timezone")):
        return None
    return Location(city=place.get("city"), region=place.get("region"), country=place.get("country"),
                    timezone=place.get("timezone"))


async def search(provider: SearchProvider, messages: Sequence[Message], *, param: str,
                 place: dict[str, Any] | None = None, size: str = "medium",
                 keep: Callable[[SearchResult], bool] = lambda result: True) -> Searched:
    """One search; `keep` filters the results (a client's allowed and blocked domains)."""
    query = last_user_text(messages, param)
    count = min(provider.max_results, CONTEXT_BUDGETS[size][0])
    found = [r for r in await provider.search(query, location_of(place), count) if keep(r)]
    results = within_budget(found, size)
    return Searched(query, context_text(query, results, datetime.date.today().isoformat()), sources_of(results),
                    {"provider": provider.name, "query": query,
                     "results": [{"title": r.title, "url": r.url} for r in results]})
