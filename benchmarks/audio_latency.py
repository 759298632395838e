"""How soon a spoken answer's audio starts, against a running `rill serve`: for each prompt, one
streamed request with `modalities: ["text", "audio"]` (pcm16), timing the first content, the first
audio, the last content and the last audio from the moment the request was sent; and the same
prompt without audio, to show what speaking costs the text's own speed on this machine.

    .venv/bin/python benchmarks/audio_latency.py [--url http://127.0.0.1:8000] [--runs 3] [--max-tokens 120]
"""

from __future__ import annotations

import argparse
import base64
import statistics
import time

import openai

PROMPTS = ["Describe the water cycle in a few sentences.", "Tell me a short story about a dragon.",
           "Explain how a bicycle works."]


def timed(client: openai.OpenAI, prompt: str, max_tokens: int, audio: bool) -> dict[str, float]:
    extra = {"modalities": ["text", "audio"], "audio": {"voice": "alloy", "format": "pcm16"}} if audio else {}
    start = time.perf_counter()
    marks: dict[str, float] = {}
    tokens, samples = 0, 0
    for chunk in client.chat.completions.create(model=None or "SmolLM2-135M-Instruct", stream=True, temperature=0,
                                                max_tokens=max_tokens, stream_options={"include_usage": True},
                                                messages=[{"role": "user", "content": prompt}], **extra):
        now = time.perf_counter() - start
        if chunk.usage is not None:
            tokens = chunk.usage.completion_tokens
        if not chunk.choices:
            continue
        delta = chunk.choices[0].delta
        if delta.content:
            marks.setdefault("first_text", now)
            marks["last_text"] = now
        if delta.audio is not None and delta.audio.data:
            marks.setdefault("first_audio", now)
            marks["last_audio"] = now
            # a player that starts at the first audio: how long would it wait for more?
            played_until = marks["first_audio"] + marks.get("stalls", 0.0) + samples / 24_000
            marks["stalls"] = marks.get("stalls", 0.0) + max(0.0, now - played_until)
            samples += len(base64.b64decode(delta.audio.data)) // 2
    text_seconds = marks["last_text"] - marks["first_text"]
    if audio:
        marks.setdefault("stalls", 0.0)
    return {**marks, "text_tok_s": tokens / text_seconds if text_seconds > 0 else 0.0,
            "audio_s": samples / 24_000}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--url", default="http://127.0.0.1:8000")
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--max-tokens", type=int, default=120)
    args = parser.parse_args()
    client = openai.OpenAI(base_url=args.url + "/v1", api_key="unused")
    timed(client, PROMPTS[0], 8, True)  # loads the voice
    rows = {True: [], False: []}
    for _ in range(args.runs):
        for prompt in PROMPTS:
            for audio in (False, True):
                rows[audio].append(timed(client, prompt, args.max_tokens, audio))

    def med(audio: bool, key: str) -> float:
        return statistics.median(r[key] for r in rows[audio])

    print(f"{len(rows[True])} requests each, medians, seconds from sending the request:")
    print(f"  text only : first text {med(False, 'first_text'):.3f}  last text {med(False, 'last_text'):.3f}  "
          f"text {med(False, 'text_tok_s'):.1f} tok/s")
    print(f"  with audio: first text {med(True, 'first_text'):.3f}  first audio {med(True, 'first_audio'):.3f}  "
          f"last text {med(True, 'last_text'):.3f}  last audio {med(True, 'last_audio'):.3f}  "
          f"text {med(True, 'text_tok_s'):.1f} tok/s  audio {med(True, 'audio_s'):.1f} s long, "
          f"playback stalls {med(True, 'stalls'):.2f} s (max {max(r['stalls'] for r in rows[True]):.2f})")


if __name__ == "__main__":
    main()
