#!/usr/bin/env bash
# PyTorch for the default engine (Rill's torch backend), the CPU build where there is no NVIDIA
# GPU: PyPI's Linux wheel of torch is a CUDA build of several GB, the CPU build ~200 MB.
# In order: a wheel already on local disk (pip's find-links), PyTorch's CPU index where no NVIDIA
# driver is loaded, then PyPI. A venv that already has this version installs nothing.
set -euo pipefail
pip="$1"
version="$2"
python="$(dirname "$pip")/python"
if "$python" -c "import sys, torch; sys.exit(torch.__version__.split('+')[0] != '$version')" 2>/dev/null; then
  exit 0
fi
# a local wheel first (torch alone: its dependencies come from the index, in the second call)
if "$pip" install -q --no-index --no-deps "torch==$version" 2>/dev/null; then
  exec "$pip" install -q "torch==$version"
fi
if [ ! -e /proc/driver/nvidia/version ]; then
  echo "Installing PyTorch $version, CPU build (no NVIDIA GPU here), from download.pytorch.org"
  "$pip" install -q --retries 1 --timeout 20 --index-url https://download.pytorch.org/whl/cpu "torch==$version" && exit 0
  echo "download.pytorch.org did not answer: PyTorch $version from PyPI (a CUDA build, several GB)"
fi
"$pip" install -q "torch==$version"
