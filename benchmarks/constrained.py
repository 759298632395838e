"""What constrained decoding costs: streamed requests with and without a json_schema
response_format, alternating, at concurrency 1 and 8 (16 requests each, max_tokens 128).

    .venv/bin/python benchmarks/constrained.py [http://127.0.0.1:8000]

Counts content chunks (one per token here) per second of wall time, and the median gap.
"""
import asyncio, httpx, time, json, statistics
import sys

URL = (sys.argv[1] if len(sys.argv) > 1 else "http://127.0.0.1:8000") + "/v1/chat/completions"
CITY = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "maxLength": 40},
        "country": {"type": "string", "maxLength": 40},
        "population": {"type": "integer", "minimum": 0, "maximum": 50000000},
        "coastal": {"type": "boolean"},
        "landmarks": {"type": "array", "items": {"type": "string", "maxLength": 30}, "maxItems": 3},
        "climate": {"enum": ["hot", "mild", "cold"]},
    },
    "required": ["name", "country", "population", "coastal", "landmarks", "climate"],
    "additionalProperties": False,
}
ASK = [{"role": "user", "content": "Describe a city you like."}]
async def run(conc, fmt, n=16):
    async def one(i):
        body = {"messages": ASK, "max_tokens": 128, "temperature": 0.7, "seed": i, "stream": True}
        if fmt: body["response_format"] = {"type": "json_schema", "json_schema": {"name": "c", "schema": CITY}}
        times = []
        async with c.stream("POST", URL, json=body) as r:
            async for line in r.aiter_lines():
                if line.startswith("data: {") and '"content":"' in line and '"role"' not in line:
                    times.append(time.perf_counter())
        return times
    async with httpx.AsyncClient(timeout=300) as c:
        sem = asyncio.Semaphore(conc)
        async def lim(i):
            async with sem: return await one(i)
        t = time.perf_counter(); res = await asyncio.gather(*(lim(i) for i in range(n))); wall = time.perf_counter() - t
    toks = sum(len(r) for r in res)
    gaps = [b - a for r in res for a, b in zip(r, r[1:])]
    return toks / wall, statistics.median(gaps) * 1000
async def main():
    for conc in (1, 8):
        for fmt in (False, True, False, True):
            tps, itl = await run(conc, fmt)
            print(f"conc {conc} {'json_schema' if fmt else 'plain      '}: {tps:6.1f} chunks/s, ITL p50 {itl:.1f} ms")
asyncio.run(main())
