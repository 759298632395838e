"""`rill bench`: a bounded load generator for OpenAI-compatible streaming chat completions.

prompts.py  deterministic prompt sets (short, long, shared-prefix)
sse.py      incremental Server-Sent Events parser (bytes split anywhere)
stats.py    percentiles, per-request results, per-level summaries
runner.py   asyncio + httpx: one level of load, model discovery, the A/B run
report.py   the plain-text tables and the JSON document
command.py  argparse flags (add_bench_parser) and the entry point (run_bench)
"""
