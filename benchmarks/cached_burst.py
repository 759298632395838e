"""Prefix reuse under concurrency: 16 distinct ~970-token prompts, each served once (so each sits
in an idle slot's cache), then all 16 together at C=16: the burst's TTFT (streamed) and how many
reused their cached prefix. Usage: python benchmarks/cached_burst.py http://127.0.0.1:8000 against
`rill serve --parallel 16 --ctx 2048` (or any OpenAI-compatible server serving SmolLM2)."""
import concurrent.futures, json, statistics, sys, time, httpx
root = sys.argv[1]
MODEL = "SmolLM2-135M-Instruct"
SYSTEM = ("You are Rill's test assistant. You answer questions about geography, history and science in plain words, one or two sentences at most, and you never invent facts. ") * 4
topics = ["rivers", "mountains", "deserts", "oceans", "forests", "volcanoes", "glaciers", "islands", "lakes", "canyons", "caves", "plains", "reefs", "deltas", "valleys", "tundra"]
prompts = [[{"role": "system", "content": SYSTEM}, {"role": "user", "content": f"{i}. Tell me about {t}. " + f"Facts about {t}, please, in detail. " * 90}] for i, t in enumerate(topics)]
def once(m):
    t0 = time.perf_counter(); ttft = None; usage = None
    with httpx.stream("POST", root + "/v1/chat/completions", timeout=300, json={"model": MODEL, "messages": m, "temperature": 0, "max_tokens": 8, "stream": True, "stream_options": {"include_usage": True}}) as r:
        for line in r.iter_lines():
            if not line.startswith("data: ") or line == "data: [DONE]": continue
            d = json.loads(line[6:])
            if ttft is None and d.get("choices") and d["choices"][0]["delta"].get("content"): ttft = time.perf_counter() - t0
            if d.get("usage"): usage = d["usage"]
    return ttft, usage["prompt_tokens_details"]["cached_tokens"], usage["prompt_tokens"]
for m in prompts: once(m)
with concurrent.futures.ThreadPoolExecutor(16) as pool:
    res = list(pool.map(once, prompts))
ttfts = sorted(r[0] for r in res)
print(f"TTFT p50 {statistics.median(ttfts)*1000:.0f} ms, max {ttfts[-1]*1000:.0f} ms; reused {sum(r[1] >= r[2]-2 for r in res)}/16")
