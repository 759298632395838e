#!/usr/bin/env bash
# llama-cpp-python as Rill builds it, from source once, then installed from Rill's own wheel
# directory: version VERSION+rill.rowfa (pip's `==VERSION` pin accepts the local label, and a
# stock VERSION installed before is replaced by it). Two changes to the stock build, both so that
# a token's logits are bit-identical however it is batched (what makes `prediction` lossless and
# lets a cached answer stand for its recomputation):
#
# - Without llamafile's tinyBLAS (-DGGML_LLAMAFILE=OFF): it takes over matrix products of two or
#   more columns and sums them in another order than ggml's dot product for one column.
# - llama-cpp-row-order-fa.patch: flash attention sums every query row alone, in key order. Stock
#   ggml splits a lone token's keys over threads from 512 cells, and tiles 64 query rows or more,
#   each in another order. Flash attention itself is kept for its speed (docs/benchmarks.md).
set -euo pipefail
pip="$1"
version="$2"
label=rill.rowfa
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/rill/wheels/llama-cpp-python-$version+$label"
if ! compgen -G "$wheels/llama_cpp_python-$version+$label-*.whl" >/dev/null; then
  echo "Building llama-cpp-python $version from source (once, ~4-15 min; cached in $wheels)"
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  "$pip" download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version"
  tar -xzf "$work/llama_cpp_python-$version.tar.gz" -C "$work"
  patch -d "$work/llama_cpp_python-$version" -p1 -s < "$(dirname "$0")/llama-cpp-row-order-fa.patch"
  mkdir -p "$wheels"
  CMAKE_ARGS="-DGGML_LLAMAFILE=OFF ${CMAKE_ARGS:-}" "$pip" wheel -q --no-deps --no-cache-dir \
    -w "$wheels" "$work/llama_cpp_python-$version"
fi
"$pip" install -q --find-links "$wheels" "llama-cpp-python==$version+$label"
