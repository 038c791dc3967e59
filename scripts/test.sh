#!/usr/bin/env bash
# Every suite: build, lint, busted specs, integration tests against a real nginx, container tests.
# The last line is "N passed, N failed" over all suites.
set -uo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d); trap 'rm -rf "$tmp"' EXIT
passed=0; failed=0; rc=0

tools/build.sh || { echo "0 passed, 1 failed"; exit 1; }

echo "== lint (eslint: what compiles badly to Lua)"
if scripts/lint.sh; then passed=$((passed + 1)); echo "lint: ok"; else failed=$((failed + 1)); rc=1; fi

echo "== specs (busted under LuaJIT)"
scripts/spec.sh | tee "$tmp/spec.out"; [ "${PIPESTATUS[0]}" -eq 0 ] || rc=1
p=$(sed -n 's/^specs: \([0-9]*\) passed, \([0-9]*\) failed$/\1/p' "$tmp/spec.out" | tail -1)
f=$(sed -n 's/^specs: \([0-9]*\) passed, \([0-9]*\) failed$/\2/p' "$tmp/spec.out" | tail -1)
passed=$((passed + ${p:-0})); failed=$((failed + ${f:-1}))

count_tap() { # $1 = tap file: adds the node runner's totals
  local p f
  p=$(grep -E '^# pass [0-9]+' "$1" | awk '{s+=$3} END {print s+0}')
  f=$(grep -E '^# fail [0-9]+' "$1" | awk '{s+=$3} END {print s+0}')
  [ -s "$1" ] || f=1
  passed=$((passed + p)); failed=$((failed + f))
}

echo "== integration (real nginx)"
TAP_OUT="$tmp/it.tap" scripts/it.sh || rc=1
count_tap "$tmp/it.tap"

if [ "${DYUPS_SKIP_CONTAINERS:-0}" != 1 ] && [ -x scripts/containers.sh ]; then
  echo "== containers (testcontainers)"
  TAP_OUT="$tmp/ct.tap" scripts/containers.sh || rc=1
  count_tap "$tmp/ct.tap"
fi

[ "$failed" -eq 0 ] || rc=1
echo "$passed passed, $failed failed"
exit $rc
