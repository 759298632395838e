#!/usr/bin/env bash
# The agent CLIs the agent-client tests drive (tests/e2e/test_agent_clis.py): Codex CLI and Claude
# Code, pinned, installed with npm into a cache folder outside the checkout (once per version pair;
# a stamp makes later runs instant). Prints the folder holding their `codex` and `claude` commands.
# Where npm is missing or the install fails it says why on stderr, prints nothing on stdout and
# exits 0: the tests then skip with that reason (see tests/e2e/agent_clis.py). Always exits 0 so
# that `make test` goes on; `--check` makes a failure exit 1 instead. `--where` installs nothing:
# it prints the folder if the pinned pair is installed and works, else says why and exits 1 (the
# tests ask this way, so that the versions are written down only here).
#
# Both packages are thin wrappers around a native binary that comes as an optional dependency
# (`@openai/codex-linux-x64`, `@anthropic-ai/claude-code-linux-x64`; claude-code's postinstall
# script links it), so optional dependencies and install scripts are asked for explicitly, whatever
# the user's npm configuration says. claude-code declares `engines: node>=22`; Debian's Node 20 only
# makes npm warn (both run as native binaries).
set -u -o pipefail

CODEX_VERSION="${RILL_CODEX_VERSION:-0.169.0}"
CLAUDE_VERSION="${RILL_CLAUDE_CODE_VERSION:-2.1.328}"
CACHE_ROOT="${RILL_AGENT_CLIS_CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/rill/agent-clis}"
DIR="$CACHE_ROOT/codex-${CODEX_VERSION}_claude-${CLAUDE_VERSION}"
BIN="$DIR/node_modules/.bin"
STAMP="$DIR/.installed"
STRICT=0
WHERE=0
case "${1:-}" in
  --check) STRICT=1 ;;
  --where) WHERE=1 ;;
  "") ;;
  *) echo "usage: $0 [--check | --where]" >&2; exit 2 ;;
esac

fail() {
  echo "agent CLIs not installed: $*; the agent-CLI tests will be skipped" >&2
  exit "$STRICT"
}

# Both commands answer --version: proof that the native binaries are there and run here.
works() {
  "$1/codex" --version >/dev/null 2>&1 && "$1/claude" --version >/dev/null 2>&1
}

if [ -f "$STAMP" ] && works "$BIN"; then
  echo "$BIN"
  exit 0
fi
if [ "$WHERE" = 1 ]; then
  if ! command -v npm >/dev/null 2>&1; then
    echo "npm is not installed (apt-get install nodejs npm), so @openai/codex@$CODEX_VERSION and @anthropic-ai/claude-code@$CLAUDE_VERSION could not be installed" >&2
  elif [ -f "$STAMP" ]; then
    echo "codex or claude in $BIN does not run (reinstall: rm -rf $DIR; bash scripts/install-agent-clis.sh)" >&2
  else
    echo "@openai/codex@$CODEX_VERSION and @anthropic-ai/claude-code@$CLAUDE_VERSION are not installed in $DIR (run \`make test\` or bash scripts/install-agent-clis.sh)" >&2
  fi
  exit 1
fi

command -v npm >/dev/null 2>&1 || fail "npm is not installed (apt-get install nodejs npm)"
command -v node >/dev/null 2>&1 || fail "node is not installed (apt-get install nodejs)"

echo "Installing @openai/codex@$CODEX_VERSION and @anthropic-ai/claude-code@$CLAUDE_VERSION into $DIR (npm; once)" >&2
mkdir -p "$CACHE_ROOT" || fail "cannot create $CACHE_ROOT"
# Built beside the final folder and renamed into place, so that an interrupted or concurrent
# install never leaves a half-filled folder behind the stamp.
TMP="$(mktemp -d "$CACHE_ROOT/.install.XXXXXX")" || fail "cannot create a temporary folder in $CACHE_ROOT"
trap 'rm -rf "$TMP"' EXIT
cat >"$TMP/package.json" <<EOF
{
  "name": "rill-agent-clis",
  "private": true,
  "description": "Codex CLI and Claude Code for Rill's agent-client tests (scripts/install-agent-clis.sh)",
  "dependencies": {
    "@openai/codex": "$CODEX_VERSION",
    "@anthropic-ai/claude-code": "$CLAUDE_VERSION"
  }
}
EOF
if ! (cd "$TMP" && npm install --include=optional --ignore-scripts=false --engine-strict=false \
        --no-audit --no-fund --no-update-notifier --loglevel=error >"$TMP/npm.log" 2>&1); then
  tail -n 20 "$TMP/npm.log" >&2
  fail "npm install failed (log above)"
fi
works "$TMP/node_modules/.bin" || {
  tail -n 20 "$TMP/npm.log" >&2
  fail "codex or claude does not run after npm install (a missing optional native package?)"
}
date -u +%FT%TZ >"$TMP/.installed"
rm -rf "$DIR"
mv "$TMP" "$DIR" || fail "cannot move the install into $DIR"
trap - EXIT
works "$BIN" || fail "codex or claude does not run from $BIN"
echo "$BIN"
