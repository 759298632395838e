"""`rill bench` on the command line: add_bench_parser() adds the subcommand to an argparse
subparsers object, run_bench() runs it and returns the exit code (0: every request succeeded;
1: errors, timeouts or no model; 2: bad arguments)."""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
from pathlib import Path
from typing import Any

from rill.bench.prompts import PROMPT_SETS
from rill.bench.report import format_table, write_json
from rill.bench.runner import RESERVED_FIELDS, BenchError, BenchOptions, Progress, run

MAX_REQUESTS = 100_000
MAX_CONCURRENCY = 4096
MAX_LEVELS = 32
MAX_TOKENS = 1_000_000
MAX_TIMEOUT = 24 * 3600.0


def _bounded_int(lo: int, hi: int):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"not an integer: {text!r}") from None
        if not lo <= value <= hi:
            raise argparse.ArgumentTypeError(f"{value} is outside [{lo}, {hi}]")
        return value
    return parse


def concurrency_levels(text: str) -> tuple[int, ...]:
    """`1,4,16` -> (1, 4, 16): positive integers, run in the order given."""
    parts = [p.strip() for p in text.split(",") if p.strip()]
    if not parts:
        raise argparse.ArgumentTypeError("give at least one concurrency level, e.g. 1,4,16")
    if len(parts) > MAX_LEVELS:
        raise argparse.ArgumentTypeError(f"at most {MAX_LEVELS} concurrency levels")
    return tuple(_bounded_int(1, MAX_CONCURRENCY)(p) for p in parts)


def timeout_seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"not a number: {text!r}") from None
    if not 0 < value <= MAX_TIMEOUT:
        raise argparse.ArgumentTypeError(f"{text} is outside (0, {MAX_TIMEOUT:g}]")
    return value


def extra_body(text: str) -> dict[str, Any]:
    """A JSON object, or @PATH of a file holding one: request fields added to every request."""
    try:
        value = json.loads(Path(text[1:]).read_text() if text.startswith("@") else text)
    except OSError as exc:
        raise argparse.ArgumentTypeError(f"cannot read {text[1:]}: {exc.strerror}") from None
    except ValueError as exc:
        raise argparse.ArgumentTypeError(f"not JSON: {exc}") from None
    if not isinstance(value, dict):
        raise argparse.ArgumentTypeError("must be a JSON object of request fields")
    reserved = sorted(RESERVED_FIELDS & value.keys())
    if reserved:
        raise argparse.ArgumentTypeError(f"{', '.join(reserved)} are set by rill bench itself")
    return value


def add_bench_parser(subparsers) -> None:
    p = subparsers.add_parser(
        "bench", help="load-test an OpenAI-compatible chat-completions server",
        description="Stream chat completions at each concurrency level in turn and report TTFT, "
                    "inter-token latency, output tokens/s, requests/s and errors. Bounded: at most "
                    "--requests per level, each level stopped after --timeout seconds.")
    p.add_argument("--url", default="http://127.0.0.1:8000", help="server A [http://127.0.0.1:8000]")
    p.add_argument("--model", default=None, help="model id [first id of GET /v1/models]")
    p.add_argument("--concurrency", type=concurrency_levels, default=(1, 4, 16),
                   help="comma-separated concurrency levels, run in turn [1,4,16]")
    p.add_argument("--requests", type=_bounded_int(1, MAX_REQUESTS), default=32,
                   help=f"requests per level (1..{MAX_REQUESTS}) [32]")
    p.add_argument("--prompts", choices=PROMPT_SETS, default="short",
                   help="prompt set: short questions, ~500-token prompts, a long shared system prompt, "
                        "renaming a name in ~300 tokens of code, or ~105-token prompts asking for long "
                        "answers (long-answer) [short]")
    p.add_argument("--max-tokens", type=_bounded_int(1, MAX_TOKENS), default=128,
                   help="max_tokens per request [128]")
    p.add_argument("--timeout", type=timeout_seconds, default=300.0,
                   help="seconds per level and server before unfinished requests count as errors [300]")
    p.add_argument("--seed", type=int, default=0, help="request i sends seed SEED+i [0]")
    p.add_argument("--extra-body", type=extra_body, default={}, metavar="JSON",
                   help="request fields added to every request, as a JSON object or @FILE "
                        "(e.g. response_format, tools, temperature)")
    p.add_argument("--json", dest="json_path", metavar="PATH", default=None,
                   help="also write the results as JSON to PATH")
    p.add_argument("--compare", dest="compare_url", metavar="URL2", default=None,
                   help="run the same load against a second server, alternating A then B at each level")
    p.add_argument("--compare-model", default=None,
                   help="model id on the --compare server [its first /v1/models id]")
    p.add_argument("--predict", choices=("off", "on", "compare"), default="off",
                   help="send each edit prompt's original code as `prediction`: on, or compare (A "
                        "without, B with, on the one server; outputs compared) [off]")


def options_from_args(args: argparse.Namespace) -> BenchOptions:
    return BenchOptions(
        url=args.url, model=args.model, concurrency=tuple(args.concurrency), requests=args.requests,
        prompts=args.prompts, max_tokens=args.max_tokens, timeout=args.timeout,
        compare_url=args.compare_url, compare_model=args.compare_model, seed=args.seed,
        extra_body=args.extra_body, predict=args.predict)


def run_bench(args: argparse.Namespace) -> int:
    options = options_from_args(args)
    if options.compare_model and not options.compare_url:
        print("rill bench: --compare-model needs --compare URL2", file=sys.stderr)
        return 2
    try:
        result = asyncio.run(run(options, progress=Progress(sys.stderr)))
    except BenchError as exc:
        print(f"rill bench: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("rill bench: interrupted", file=sys.stderr)
        return 130
    sys.stdout.write(format_table(result))
    sys.stdout.flush()
    if args.json_path:
        try:
            write_json(result, args.json_path)
        except OSError as exc:
            print(f"rill bench: cannot write {args.json_path}: {exc}", file=sys.stderr)
            return 1
    return 0 if result.ok else 1
