"""`web_search_options` on a local model: search the last user message (with the user's location
as hints), put the results, numbered and within `search_context_size`'s budget, into the system
prompt, and later turn the answer's citations into `url_citation` annotations."""

from __future__ import annotations

import datetime
from typing import Any

from rill.api.protocols.chat.messages import with_system_text
from rill.api.protocols.chat.schemas import ChatCompletionRequest, UserMessage
from rill.errors import InvalidRequest, UnsupportedParameter
from rill.search.context import CONTEXT_BUDGETS, Source, context_text, sources_of, within_budget
from rill.search.providers import Location, SearchProvider

MAX_QUERY_CHARS = 400
NOT_CONFIGURED = ("`web_search_options`: web search is not configured on this server: add a [search] "
                  'table to rill.toml (provider = "searxng" with the url of a SearxNG-compatible '
                  'endpoint, or provider = "brave" / "tavily" with api_key_env); see docs/web-search.md.')


def not_configured() -> UnsupportedParameter:
    return UnsupportedParameter(NOT_CONFIGURED, param="web_search_options")


Searched = tuple[ChatCompletionRequest, tuple[Source, ...], dict[str, Any] | None]


async def with_search(body: ChatCompletionRequest, provider: SearchProvider | None) -> Searched:
    """(the body with the results in its system prompt and web_search_options done with, the
    sources the answer may cite, what the span records of the search). A body without the
    field comes back as it is."""
    options = body.web_search_options
    if options is None:
        return body, (), None
    if provider is None:
        raise not_configured()
    query = last_user_text(body)
    location = None
    if options.user_location is not None:
        place = options.user_location.approximate
        location = Location(city=place.city, region=place.region, country=place.country, timezone=place.timezone)
    size = options.search_context_size or "medium"
    count = min(provider.max_results, CONTEXT_BUDGETS[size][0])
    results = within_budget(await provider.search(query, location, count), size)
    text = context_text(query, results, datetime.date.today().isoformat())
    searched = with_system_text(body, text).model_copy(update={"web_search_options": None})
    record = {"provider": provider.name, "query": query, "results": [{"title": r.title, "url": r.url} for r in results]}
    return searched, sources_of(results), record


def last_user_text(body: ChatCompletionRequest) -> str:
    for i in range(len(body.messages) - 1, -1, -1):
        message = body.messages[i]
        if isinstance(message, UserMessage):
            content = message.content
            text = content if isinstance(content, str) else " ".join(p.text or "" for p in content if p.type == "text")
            text = " ".join(text.split())
            if text:
                return text[:MAX_QUERY_CHARS]
    raise InvalidRequest("`web_search_options` searches the last user message's text, and there is none.",
                         param="messages")
