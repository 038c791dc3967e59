#!/usr/bin/env bash
# Integration suites against a real nginx (test/integration/*.test.mjs), one file at a time (they start
# nginx with several workers and measure routing; running them side by side on 2 cores makes them flaky).
set -uo pipefail
cd "$(dirname "$0")/.."
[ -f dist/lua/dyups/init.lua ] || tools/build.sh
files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(ls test/integration/*.test.mjs)
exec node --test --test-concurrency=1 --test-reporter=spec --test-reporter-destination=stdout \
  --test-reporter=tap --test-reporter-destination="${TAP_OUT:-/dev/null}" "${files[@]}"
