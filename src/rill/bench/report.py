"""The results as a plain-text table (stdout) and as a JSON document (--json PATH)."""

from __future__ import annotations

import json
from typing import Any

from rill.bench.runner import BenchResult
from rill.bench.stats import LevelStats, ratio

JSON_VERSION = 1

_COLUMNS = ["server", "conc", "ok", "errors", "req/s", "out tok/s", "stream tok/s",
            "TTFT p50 ms", "TTFT p90 ms", "TTFT p99 ms", "ITL p50 ms", "ITL p99 ms", "wall s"]
_COMPARE_COLUMNS = ["conc", "A tok/s", "B tok/s", "tok/s A/B",
                    "A TTFT p50 ms", "B TTFT p50 ms", "TTFT p50 A/B"]
_PREDICTION_COLUMNS = ["server", "conc", "accepted", "rejected", "accepted %", "same output as A",
                       "out tok/s vs A", "stream tok/s vs A"]


def _num(x: float | None, digits: int = 1) -> str:
    return "-" if x is None else f"{x:.{digits}f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.rjust(w) if i else c.ljust(w) for i, (c, w) in enumerate(zip(cells, widths))).rstrip()
    return "\n".join([line(header), line(["-" * w for w in widths]), *(line(r) for r in rows)])


def _level_row(lv: LevelStats) -> list[str]:
    errors = str(lv.errors) + (f" (+{lv.not_run} not run)" if lv.not_run else "")
    return [lv.server, str(lv.concurrency), str(lv.completed), errors,
            _num(lv.requests_per_s, 2), _num(lv.output_tokens_per_s), _num(lv.stream_tokens_per_s),
            _num(lv.ttft_ms["p50"]), _num(lv.ttft_ms["p90"]), _num(lv.ttft_ms["p99"]),
            _num(lv.itl_ms["p50"]), _num(lv.itl_ms["p99"]), _num(lv.wall_s, 2)]


def compare_rows(result: BenchResult) -> list[dict[str, Any]]:
    """Per concurrency level with both servers: their tokens/s and TTFT p50 and the ratios A/B
    (None where a value is missing or B's is zero)."""
    rows = []
    for conc in result.options.concurrency:
        a = next((lv for lv in result.levels if lv.server == "A" and lv.concurrency == conc), None)
        b = next((lv for lv in result.levels if lv.server == "B" and lv.concurrency == conc), None)
        if a is None or b is None:
            continue
        rows.append({
            "concurrency": conc,
            "a_output_tokens_per_s": a.output_tokens_per_s, "b_output_tokens_per_s": b.output_tokens_per_s,
            "output_tokens_per_s_ratio": ratio(a.output_tokens_per_s, b.output_tokens_per_s),
            "a_ttft_p50_ms": a.ttft_ms["p50"], "b_ttft_p50_ms": b.ttft_ms["p50"],
            "ttft_p50_ratio": ratio(a.ttft_ms["p50"], b.ttft_ms["p50"]),
            "a_stream_tokens_per_s": a.stream_tokens_per_s, "b_stream_tokens_per_s": b.stream_tokens_per_s,
            "same_outputs": sum(1 for i, text in b.outputs.items() if a.outputs.get(i) == text),
            "compared_outputs": sum(1 for i in b.outputs if i in a.outputs),
        })
    return rows


def _prediction_rows(result: BenchResult) -> list[list[str]]:
    """Per level of a server sending predictions: the usage counts, and how many outputs equal
    server A's for the same request (with --predict compare, A is the run without)."""
    compared = {r["concurrency"]: r for r in compare_rows(result)}
    rows = []
    for lv in result.levels:
        if not next(t for t in result.targets if t.label == lv.server).predicts:
            continue
        drafted = lv.accepted_prediction_tokens + lv.rejected_prediction_tokens
        same = compared.get(lv.concurrency) if lv.server == "B" else None
        rows.append([lv.server, str(lv.concurrency), str(lv.accepted_prediction_tokens),
                     str(lv.rejected_prediction_tokens),
                     _num(100 * lv.accepted_prediction_tokens / drafted if drafted else None),
                     f"{same['same_outputs']}/{same['compared_outputs']}" if same else "-",
                     _num(ratio(same["b_output_tokens_per_s"], same["a_output_tokens_per_s"]), 2) if same else "-",
                     _num(ratio(same["b_stream_tokens_per_s"], same["a_stream_tokens_per_s"]), 2) if same else "-"])
    return rows


def format_table(result: BenchResult) -> str:
    o = result.options
    lines = [f"rill bench: {o.requests} requests per level, prompts {o.prompts}, "
             f"max_tokens {o.max_tokens}, timeout {o.timeout:g}s per level"]
    for t in result.targets:
        lines.append(f"  {t.label}: {t.url}  model {t.model}" + ("  with predictions" if t.predicts else ""))
    lines += ["", _table(_COLUMNS, [_level_row(lv) for lv in result.levels])]
    if len(result.targets) > 1:
        rows = [[str(r["concurrency"]), _num(r["a_output_tokens_per_s"]), _num(r["b_output_tokens_per_s"]),
                 _num(r["output_tokens_per_s_ratio"], 2), _num(r["a_ttft_p50_ms"]), _num(r["b_ttft_p50_ms"]),
                 _num(r["ttft_p50_ratio"], 2)] for r in compare_rows(result)]
        lines += ["", _table(_COMPARE_COLUMNS, rows)]
    prediction_rows = _prediction_rows(result)
    if prediction_rows:
        lines += ["", "prediction tokens (usage):", _table(_PREDICTION_COLUMNS, prediction_rows)]
    examples = [(lv, kind, text) for lv in result.levels for kind, text in lv.error_examples.items()]
    if examples:
        lines += ["", "errors:"]
        for lv, kind, text in examples:
            lines.append(f"  [{lv.server} conc {lv.concurrency}] {lv.error_kinds[kind]} x {kind}: "
                         + " ".join(text.split())[:200])
    return "\n".join(lines) + "\n"


def to_json(result: BenchResult) -> dict[str, Any]:
    return {
        "version": JSON_VERSION,
        "options": result.options.to_json(),
        "servers": {t.label: {"url": t.url, "model": t.model, "predicts": t.predicts} for t in result.targets},
        "levels": [lv.to_json() for lv in result.levels],
        "compare": compare_rows(result) if len(result.targets) > 1 else None,
        "ok": result.ok,
    }


def write_json(result: BenchResult, path: str) -> None:
    with open(path, "w", encoding="utf-8") as f:
        json.dump(to_json(result), f, indent=2)
        f.write("\n")
