#!/usr/bin/env bash
# System packages the test suite uses beyond Python: Debian's chromium + chromium-driver (browser tests) and
# postgresql (the storage and API tests also run against a throwaway PostgreSQL server, see tests/databases.py),
# opencv-doc (its examples/data/vtest.avi, a real pedestrian video, goes through the video pipeline in a slow test).
# Best effort: what cannot be installed is reported here, and the tests that need it are skipped saying why.
set -u
missing=()
command -v chromium >/dev/null && command -v chromedriver >/dev/null || missing+=(chromium chromium-driver)
{ command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1; } || missing+=(postgresql)
[ -f /usr/share/doc/opencv-doc/examples/data/vtest.avi ] || missing+=(opencv-doc)
if [ ${#missing[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}") \
    >/tmp/amg-reid-apt.log 2>&1 || echo "could not install ${missing[*]} (see /tmp/amg-reid-apt.log): the tests needing them will be skipped"
else
  echo "not root or no apt-get: install ${missing[*]} yourself, or the tests needing them are skipped"
fi
exit 0
