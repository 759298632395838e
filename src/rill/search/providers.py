"""Search providers: a query (and the user's approximate location) -> results, over httpx.

- `searxng`: any SearxNG-compatible endpoint, `GET {url}/search?q=...&format=json` (the instance
  must enable the json format); it has no location parameter, so the city and country are added
  to the query's words.
- `brave`: Brave's Web Search API (`X-Subscription-Token`; the location as its `X-Loc-*` headers).
- `tavily`: Tavily's search API (`Authorization: Bearer`; `country` as Tavily names countries).

Every failure (network, status, a body that is not the provider's JSON) is a SearchFailed.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Protocol

import httpx

from rill.config import SearchConfig
from rill.errors import SearchFailed

BRAVE_URL = "https://api.search.brave.com/res/v1/web/search"
TAVILY_URL = "https://api.tavily.com/search"
MAX_RESPONSE_BYTES = 4 * 1024 * 1024


@dataclass(frozen=True, slots=True)
class Location:
    """`web_search_options.user_location.approximate`."""
    city: str | None = None
    region: str | None = None
    country: str | None = None  # ISO 3166-1 alpha-2, as OpenAI sends it
    timezone: str | None = None

    def words(self) -> str:
        return " ".join(w for w in (self.city, self.region, self.country) if w)


@dataclass(frozen=True, slots=True)
class SearchResult:
    title: str
    url: str
    snippet: str


class SearchProvider(Protocol):
    name: str
    max_results: int  # the most results one search may ask for ([search] max_results)

    async def search(self, query: str, location: Location | None, count: int) -> list[SearchResult]: ...

    async def aclose(self) -> None: ...


class HttpSearch:
    """What the three providers share: one client, the request, the checks on the answer."""

    name = "search"

    def __init__(self, config: SearchConfig, *, transport: httpx.AsyncBaseTransport | None = None):
        self.config = config
        self.max_results = config.max_results
        self._key = config.api_key()
        self._client = httpx.AsyncClient(timeout=config.timeout, transport=transport, follow_redirects=True,
                                         headers={"accept": "application/json"})

    async def _json(self, request: httpx.Request) -> Any:
        try:
            response = await self._client.send(request)
        except httpx.TimeoutException:
            raise SearchFailed(f"web search ({self.name}) did not answer within {self.config.timeout:g} s") from None
        except httpx.HTTPError as exc:
            raise SearchFailed(f"web search ({self.name}) could not be reached: {exc}") from None
        if response.status_code != 200:
            raise SearchFailed(f"web search ({self.name}) answered HTTP {response.status_code}: "
                               f"{response.text[:200]}")
        if len(response.content) > MAX_RESPONSE_BYTES:
            raise SearchFailed(f"web search ({self.name}) answered more than {MAX_RESPONSE_BYTES} bytes")
        try:
            return response.json()
        except ValueError:
            raise SearchFailed(f"web search ({self.name}) answered something that is not JSON") from None

    async def aclose(self) -> None:
        await self._client.aclose()


class SearxngSearch(HttpSearch):
    name = "searxng"

    async def search(self, query: str, location: Location | None, count: int) -> list[SearchResult]:
        words = f"{query} {location.words()}".strip() if location else query
        url = self.config.url.rstrip("/") + "/search"  # type: ignore[union-attr]
        data = await self._json(self._client.build_request("GET", url, params={"q": words, "format": "json"}))
        return _results(self.name, data, "results", "content")[:count]


class BraveSearch(HttpSearch):
    name = "brave"

    async def search(self, query: str, location: Location | None, count: int) -> list[SearchResult]:
        headers = {"X-Subscription-Token": self._key or ""}
        params: dict[str, Any] = {"q": query, "count": count}
        if location:
            headers.update({f"X-Loc-{k}": v for k, v in (("City", location.city), ("State-Name", location.region),
                                                          ("Country", location.country),
                                                          ("Timezone", location.timezone)) if v})
            if location.country:
                params["country"] = location.country.lower()
        request = self._client.build_request("GET", self.config.url or BRAVE_URL, params=params, headers=headers)
        data = await self._json(request)
        web = data.get("web") if isinstance(data, dict) else None
        return _results(self.name, web if isinstance(web, dict) else {"results": []}, "results", "description")[:count]


class TavilySearch(HttpSearch):
    name = "tavily"

    async def search(self, query: str, location: Location | None, count: int) -> list[SearchResult]:
        body: dict[str, Any] = {"query": f"{query} {location.city}" if location and location.city else query,
                                "max_results": count}
        request = self._client.build_request("POST", self.config.url or TAVILY_URL, json=body,
                                             headers={"Authorization": f"Bearer {self._key}"})
        return _results(self.name, await self._json(request), "results", "content")[:count]


PROVIDERS: dict[str, type[HttpSearch]] = {"searxng": SearxngSearch, "brave": BraveSearch, "tavily": TavilySearch}


def open_provider(config: SearchConfig, *, transport: httpx.AsyncBaseTransport | None = None) -> HttpSearch:
    return PROVIDERS[config.provider](config, transport=transport)


def _results(provider: str, data: Any, key: str, snippet: str) -> list[SearchResult]:
    """A provider's list of {title, url, <snippet>} objects; entries without a URL are skipped."""
    items = data.get(key) if isinstance(data, dict) else None
    if not isinstance(items, list):
        raise SearchFailed(f"web search ({provider}) answered JSON without a `{key}` list")
    out = []
    for item in items:
        if isinstance(item, dict) and isinstance(item.get("url"), str) and item["url"].startswith(("http://", "https://")):
            out.append(SearchResult(title=_str(item.get("title")) or item["url"], url=item["url"],
                                    snippet=_str(item.get(snippet))))
    return out


def _str(value: Any) -> str:
    return " ".join(value.split()) if isinstance(value, str) else ""
