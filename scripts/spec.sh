#!/usr/bin/env bash
# Busted specs on the compiled Lua, under LuaJIT (plain `busted` would run lua5.x and answer differently).
# Prints "N passed, N failed" as its last line (busted's own summary is not a format CI reads).
set -uo pipefail
cd "$(dirname "$0")/.."
out=$(mktemp); trap 'rm -f "$out"' EXIT
luajit -e 'package.path="/usr/share/lua/5.1/?.lua;/usr/share/lua/5.1/?/init.lua;"..package.path' \
  /usr/bin/busted --lua=luajit -o TAP "$@" 2>&1 | tee "$out"
rc=${PIPESTATUS[0]}
passed=$(grep -c '^ok ' "$out")
failed=$(grep -c '^not ok ' "$out")
echo "specs: $passed passed, $failed failed"
[ "$rc" -eq 0 ] && [ "$failed" -eq 0 ]
