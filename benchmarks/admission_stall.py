"""Do running streams keep flowing while a long prompt is admitted?

Starts N streams that generate for a long time, waits until every one of them is decoding, then
sends one ~1,000-token prompt. For each stream it compares the largest gap between content
chunks while that prompt is being read (from sending it to its first token) with the stream's
median gap before it; it also reports the long prompt's time to first token.

    .venv/bin/python benchmarks/admission_stall.py --url http://127.0.0.1:8000 [--streams 16]

Works against any OpenAI-compatible server (llama-server included).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import time

import httpx

STORY = ("The river runs past the old mill, under the stone bridge, through the market town and on "
         "to the sea, carrying leaves, boats and the stories of everyone who lives along it. ")


async def stream(http: httpx.AsyncClient, url: str, body: dict, times: list[float], stop: asyncio.Event) -> None:
    async with http.stream("POST", url, json={**body, "stream": True}) as r:
        r.raise_for_status()
        async for line in r.aiter_lines():
            if line.startswith("data: {"):
                choices = json.loads(line[6:]).get("choices") or [{}]
                if choices[0].get("delta", {}).get("content"):
                    times.append(time.perf_counter())
            if stop.is_set():
                return


async def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--model", default=None)
    parser.add_argument("--streams", type=int, default=16)
    parser.add_argument("--prompt-repeats", type=int, default=28, help="~36 tokens each [28: ~1,000 tokens]")
    args = parser.parse_args()
    url = args.url.rstrip("/") + "/v1/chat/completions"
    async with httpx.AsyncClient(timeout=600, limits=httpx.Limits(max_connections=args.streams + 4)) as http:
        model = args.model or (await http.get(args.url.rstrip("/") + "/v1/models")).json()["data"][0]["id"]
        stop = asyncio.Event()
        times: list[list[float]] = [[] for _ in range(args.streams)]
        runners = [asyncio.create_task(stream(http, url, {
            "model": model, "temperature": 0, "max_tokens": 1500,
            # greedy SmolLM2 answers this with numbers for thousands of tokens
            "messages": [{"role": "user", "content": "Count from 1 to 1000, separated by commas."}]},
            times[i], stop)) for i in range(args.streams)]
        while min(len(t) for t in times) < 30:  # every stream is decoding, with a median to go by
            if any(task.done() for task in runners):
                raise SystemExit("a stream ended before the long prompt was sent; use a longer answer")
            await asyncio.sleep(0.05)
        sent = time.perf_counter()
        first: list[float] = []
        await stream(http, url, {"model": model, "temperature": 0, "max_tokens": 1, "messages": [
            {"role": "user", "content": "Summarise this in one word. " + STORY * args.prompt_repeats}]},
            first, asyncio.Event())
        ttft = (first[0] if first else time.perf_counter()) - sent
        admitted = sent + ttft
        await asyncio.sleep(0.5)
        stop.set()
        for task in runners:
            task.cancel()
        await asyncio.gather(*runners, return_exceptions=True)

    ratios = []
    for t in times:
        before = [b - a for a, b in zip(t, t[1:]) if b < sent]
        during = [b - a for a, b in zip(t, t[1:]) if b >= sent and a <= admitted]
        if len(before) >= 5 and during:
            ratios.append(max(during) / statistics.median(before))
    print(f"{args.streams} streams; long prompt TTFT {ttft * 1000:.0f} ms")
    print(f"median gap before: {statistics.median(statistics.median([b - a for a, b in zip(t, t[1:]) if b < sent]) for t in times) * 1000:.1f} ms")
    print(f"worst gap / median gap while it was read: max {max(ratios):.2f}, "
          f"median over streams {statistics.median(ratios):.2f} ({len(ratios)} streams measured)")


if __name__ == "__main__":
    asyncio.run(main())
