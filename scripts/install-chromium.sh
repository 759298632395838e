#!/usr/bin/env bash
# Debian's chromium for the browser tests (playwright cannot download browsers here): installed
# when missing and possible (root with apt-get); otherwise the browser tests skip, saying why.
command -v chromium >/dev/null 2>&1 && exit 0
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
  echo "Installing chromium for the browser tests (apt-get; once)"
  export DEBIAN_FRONTEND=noninteractive
  apt-get install -y -q chromium >/dev/null 2>&1 || { apt-get update -q >/dev/null 2>&1 && apt-get install -y -q chromium >/dev/null 2>&1; }
fi
command -v chromium >/dev/null 2>&1 || echo "chromium could not be installed: the browser tests will be skipped"
exit 0
