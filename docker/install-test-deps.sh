#!/usr/bin/env bash
# System packages the test suite uses beyond Python: Debian's chromium + chromium-driver for the browser tests.
# Best effort: where they cannot be installed the browser tests are skipped with a message saying so.
set -u
if command -v chromium >/dev/null && command -v chromedriver >/dev/null; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver) \
    >/tmp/amg-reid-apt.log 2>&1 || echo "chromium could not be installed (see /tmp/amg-reid-apt.log): browser tests will be skipped"
else
  echo "not root or no apt-get: install chromium and chromium-driver yourself, or the browser tests are skipped"
fi
exit 0
