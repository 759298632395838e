"""An upstream model's settings: one OpenAI-compatible server or several replicas of it, and how
the gateway routes over them and checks their health (docs/gateway.md). Validated at start-up."""

from __future__ import annotations

import os
from dataclasses import dataclass, replace

from rill.errors import ConfigError


@dataclass(frozen=True, slots=True)
class ReplicaConfig:
    """One server of an upstream model: `replicas = [{url = ..., weight = 2, api_key_env = ...}]`."""

    url: str  # up to and including /v1, as base_url
    weight: float = 1.0  # its share of new conversations, relative to the others
    api_key_env: str | None = None  # its own key's variable; default: the model's api_key_env


ROUTING_POLICIES = ("prefix", "round_robin", "least_busy")


@dataclass(frozen=True, slots=True)
class UpstreamConfig:
    """A model served by an OpenAI-compatible server elsewhere (vLLM, llama-server, a hosted API),
    or by several replicas of one (`base_urls` or `replicas`), routed as docs/gateway.md says."""

    name: str  # the id clients send
    base_url: str = ""  # up to and including /v1: requests go to {base_url}/chat/completions
    model: str | None = None  # the upstream's name for it; default: name
    api_key_env: str | None = None  # the environment variable holding its API key
    timeout: float = 60.0  # seconds: to connect, to the first byte, and between chunks
    max_concurrency: int = 64  # requests in flight to it (to each replica) at once; more wait (up to timeout)
    retries: int = 1  # tries again on connect errors, timeouts, 429 and 5xx before the fallbacks
    aliases: tuple[str, ...] = ()
    fallbacks: tuple[str, ...] = ()
    # the protocols besides Chat Completions it serves itself: those requests are passed through
    # as sent; the others are bridged to its /chat/completions
    supports: tuple[str, ...] = ()
    # several replicas of the model (instead of base_url): URLs alone, or each with a weight and key
    base_urls: tuple[str, ...] = ()
    replicas: tuple[ReplicaConfig, ...] = ()
    routing: str = "prefix"  # prefix | round_robin | least_busy (docs/gateway.md, "Replicas")
    # the load guard: past both thresholds (in-flight requests, max - min and max / min) the least
    # loaded replica takes the request whatever its cache holds
    balance_abs_threshold: int = 8
    balance_rel_threshold: float = 1.5
    cache_threshold: float = 0.5  # the share of the prompt a replica must hold to be picked for it
    # active health checks: GET this path (under base_url; from the host's root if it starts with
    # "/"; "" for none) every health_interval seconds, with the replica's key
    health_path: str = "models"
    health_interval: float = 10.0
    eject_after: int = 3  # consecutive failures (connect errors, timeouts, 5xx) that eject a replica
    eject_seconds: float = 30.0  # the first ejection's length; doubled at each failed trial, up to 10x

    @property
    def id(self) -> str:
        return self.name

    @property
    def remote_model(self) -> str:
        return self.model or self.name

    @property
    def endpoints(self) -> tuple[ReplicaConfig, ...]:
        """Every replica, as a ReplicaConfig (one for a plain base_url)."""
        if self.replicas:
            return self.replicas
        return tuple(ReplicaConfig(url) for url in (self.base_urls or (self.base_url,)))

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None

    def for_replica(self, replica: ReplicaConfig) -> UpstreamConfig:
        """This model's settings for one of its replicas (its URL and key)."""
        return replace(self, base_url=replica.url, base_urls=(), replicas=(),
                       api_key_env=replica.api_key_env or self.api_key_env)

    def __post_init__(self) -> None:
        where = f"model {self.name!r}"
        if not self.name.strip():
            raise ConfigError("an upstream model needs a name")
        given = [key for key in ("base_url", "base_urls", "replicas") if getattr(self, key)]
        if len(given) != 1:
            raise ConfigError(f"{where}: give its server as exactly one of base_url, base_urls (several replicas) "
                              f"or replicas (several, each with a weight or key){'' if not given else ', not ' + ' and '.join(given)}")
        urls = [r.url for r in self.endpoints]
        for url in urls:
            if not url.startswith(("http://", "https://")):
                raise ConfigError(f"{where}: a replica's URL must be an http:// or https:// URL, got {url!r}"
                                  if len(urls) > 1 else
                                  f"{where}: base_url must be an http:// or https:// URL, got {url!r}")
        if len(set(u.rstrip("/") for u in urls)) != len(urls):
            raise ConfigError(f"{where}: a replica is listed twice")
        for replica in self.replicas:
            if not replica.weight > 0:
                raise ConfigError(f"{where}: replica {replica.url}: weight must be more than 0")
            if replica.api_key_env and not os.environ.get(replica.api_key_env):
                raise ConfigError(f"{where}: replica {replica.url}: the environment variable "
                                  f"{replica.api_key_env} (api_key_env) is not set")
        if self.routing not in ROUTING_POLICIES:
            raise ConfigError(f"{where}: routing must be one of {', '.join(ROUTING_POLICIES)}, not {self.routing!r}")
        if self.balance_abs_threshold < 0 or not self.balance_rel_threshold >= 1:
            raise ConfigError(f"{where}: balance_abs_threshold must be at least 0 and balance_rel_threshold at least 1")
        if not 0 <= self.cache_threshold <= 1:
            raise ConfigError(f"{where}: cache_threshold must be between 0 and 1")
        if self.health_interval < 0 or self.eject_after < 1 or not self.eject_seconds > 0:
            raise ConfigError(f"{where}: health_interval must be at least 0, eject_after at least 1 and "
                              "eject_seconds more than 0")
        if not self.timeout > 0:
            raise ConfigError(f"{where}: timeout must be more than 0 seconds")
        if self.max_concurrency < 1:
            raise ConfigError(f"{where}: max_concurrency must be at least 1")
        if not 0 <= self.retries <= 10:
            raise ConfigError(f"{where}: retries must be between 0 and 10")
        unknown = [p for p in self.supports if p not in NATIVE_PROTOCOLS]
        if unknown:
            raise ConfigError(f"{where}: supports {unknown[0]!r} is not a protocol Rill can pass through "
                              f"(the protocols: {', '.join(NATIVE_PROTOCOLS)})")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ConfigError(f"{where}: the environment variable {self.api_key_env} (api_key_env) is not set")


# what `supports` may name: the upstream's path for each, under base_url
NATIVE_PROTOCOLS = {"responses": "responses", "messages": "messages", "completions": "completions"}
