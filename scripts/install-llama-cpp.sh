#!/usr/bin/env bash
# llama-cpp-python, built from source once without llamafile's tinyBLAS kernels, then installed
# from Rill's own wheel directory (the flag is not part of pip's wheel-cache key, so a wheel
# built with other flags must never be picked up by mistake).
#
# Why: tinyBLAS takes over matrix products of two or more columns, so attention over several
# tokens of one sequence (a prefill chunk, a speculative verification) summed in another order
# than a lone decoded token. Without it every element is one ggml dot product whatever the batch,
# and a token's logits are bit-identical however it was computed: that is what makes `prediction`
# lossless. The cost is prefill speed on F16/Q8_0 weights (docs/benchmarks.md).
set -euo pipefail
pip="$1"
version="$2"
wheels="${XDG_CACHE_HOME:-$HOME/.cache}/rill/wheels/llama-cpp-python-$version-nollamafile"
if ! compgen -G "$wheels/llama_cpp_python-$version-*.whl" >/dev/null; then
  echo "Building llama-cpp-python $version from source (once, ~4-15 min; cached in $wheels)"
  mkdir -p "$wheels"
  CMAKE_ARGS="-DGGML_LLAMAFILE=OFF ${CMAKE_ARGS:-}" "$pip" wheel -q --no-deps --no-cache-dir \
    --no-binary llama-cpp-python -w "$wheels" "llama-cpp-python==$version"
fi
"$pip" install -q --only-binary llama-cpp-python --find-links "$wheels" "llama-cpp-python==$version"
# A venv made before this script holds the same version built with llamafile: replace it.
python="$(dirname "$pip")/python"
if "$python" -c 'import llama_cpp, sys; sys.exit(b"LLAMAFILE = 1" not in llama_cpp.llama_print_system_info())' 2>/dev/null; then
  echo "Replacing the installed llama-cpp-python (built with llamafile) with Rill's build"
  "$pip" install -q --force-reinstall --no-deps --no-index --find-links "$wheels" "llama-cpp-python==$version"
fi
