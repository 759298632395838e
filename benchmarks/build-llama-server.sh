#!/usr/bin/env bash
# llama.cpp's own `llama-server`, for benchmarks/engines.sh: built from the llama.cpp sources
# vendored in the llama-cpp-python sdist Rill pins (the same llama.cpp as Rill's backend), with
# llama.cpp's default flags (llamafile's kernels on, as the stock server ships), once, into
# ~/.cache/rill/llama-server-VERSION. Prints the binary's path.
#
#   bash benchmarks/build-llama-server.sh [VERSION]   # default: the Makefile's LLAMA_CPP_VERSION
#   LLAMAFILE=OFF bash benchmarks/build-llama-server.sh   # without llamafile's kernels, as Rill builds llama.cpp
#   LLAMAFILE=OFF ROWFA=1 bash benchmarks/build-llama-server.sh   # and with Rill's flash attention patch
set -euo pipefail
cd "$(dirname "$0")/.."
version=${1:-$(sed -n 's/^LLAMA_CPP_VERSION := //p' Makefile)}
llamafile=${LLAMAFILE:-ON}
suffix=""
if [ "$llamafile" = OFF ]; then suffix=-nollamafile; fi
if [ -n "${ROWFA:-}" ]; then suffix=$suffix-rowfa; fi
dest="${XDG_CACHE_HOME:-$HOME/.cache}/rill/llama-server-$version$suffix"
if [ ! -x "$dest/bin/llama-server" ]; then
  work=$(mktemp -d)
  trap 'rm -rf "$work"' EXIT
  echo "building llama-server $version (once, a few minutes)" >&2
  python3 -m pip download -q --no-deps --no-binary :all: -d "$work" "llama-cpp-python==$version" >&2
  tar -xzf "$work"/llama_cpp_python-"$version".tar.gz -C "$work"
  if [ -n "${ROWFA:-}" ]; then
    patch -d "$work/llama_cpp_python-$version" -p1 -s < scripts/llama-cpp-row-order-fa.patch >&2
  fi
  src="$work/llama_cpp_python-$version/vendor/llama.cpp"
  cmake -S "$src" -B "$work/build" -DCMAKE_BUILD_TYPE=Release -DLLAMA_BUILD_SERVER=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DBUILD_SHARED_LIBS=OFF -DGGML_LLAMAFILE="$llamafile" >&2
  cmake --build "$work/build" --target llama-server -j "$(nproc)" >&2
  mkdir -p "$dest/bin"
  cp "$work/build/bin/llama-server" "$dest/bin/"
fi
echo "$dest/bin/llama-server"
