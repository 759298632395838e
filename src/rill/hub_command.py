"""`rill pull SPEC` and `rill models`: Hub models in huggingface_hub's cache (docs/models.md).
add_hub_parsers() adds both subcommands to an argparse subparsers object, run_hub() runs one and
returns the exit code (0: done; 2: a bad spec, a failed download; 130: interrupted).

`pull` downloads what `rill serve --model SPEC` would serve and writes its local path alone on
stdout (`MODEL=$(rill pull hf:...)`), the progress and the cache's location on stderr. A dropped
connection resumes where it stopped (huggingface_hub retries with a Range request); Ctrl-C stops at
once, keeping the files already finished. `models` lists the cached models with their sizes and
the spec that serves each, without any request.
"""

from __future__ import annotations

import argparse
import logging
import sys

from rill.errors import ConfigError

SPEC_HELP = ("hf:ORG/REPO[@REVISION][:QUANT or :FILE.gguf], e.g. hf:Qwen/Qwen2.5-0.5B-Instruct-GGUF:Q4_K_M; a "
             "repo of safetensors with config.json: hf:ORG/REPO")


def add_hub_parsers(subparsers) -> None:
    pull = subparsers.add_parser(
        "pull", help="download a model from the Hugging Face Hub without serving it",
        description="Download a GGUF file (picked by quantization or file name) or a safetensors model into the "
                    "Hugging Face cache ($HF_HOME/hub), resuming a dropped connection, and print its local "
                    "path. HF_TOKEN (private and gated repos), HF_ENDPOINT (a mirror) and HF_HUB_OFFLINE are "
                    "honoured.")
    pull.add_argument("spec", metavar="SPEC", help=SPEC_HELP)
    subparsers.add_parser(
        "models", help="list the models in the Hugging Face cache",
        description="List the GGUF files and safetensors models in the Hugging Face cache ($HF_HOME/hub) with "
                    "their sizes, and the --model value that serves each. Makes no request.")


def run_hub(args: argparse.Namespace) -> int:
    logging.basicConfig(level=logging.INFO, stream=sys.stderr, format="%(message)s")
    try:
        if args.command == "pull":
            return _pull(args.spec)
        return _models()
    except ConfigError as exc:
        print(f"rill {args.command}: {exc.message}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"rill {args.command}: interrupted; the files it finished stay in the cache, run it again for the rest",
              file=sys.stderr)
        return 130


def _pull(text: str) -> int:
    from rill.hub.download import fetch
    from rill.hub.spec import parse_spec

    model = fetch(parse_spec(text))
    print(model.path, flush=True)
    return 0


def _models() -> int:
    from rill.hub.cache import cache_root, cached_models
    from rill.hub.pick import format_size

    rows = cached_models()
    table = [("MODEL", "KIND", "SIZE", "REVISION")]
    table += [(m.spec, m.kind, format_size(m.size), m.revision) for m in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    sys.stdout.write("".join("  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() + "\n"
                             for row in table))
    print(f"{len(rows)} cached model{'' if len(rows) == 1 else 's'} in {cache_root()}", file=sys.stderr)
    return 0
