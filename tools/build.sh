#!/usr/bin/env bash
# Clean build of src/ -> dist/lua/. Fails on TypeScript errors and on every TSTL diagnostic (warnings
# included: with noEmitOnError a warning would otherwise leave no output and exit 0), and never leaves
# stale files: dist/lua is removed first.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/typescript-to-lua ] || npm ci --no-audit --no-fund
rm -rf dist/lua
log=$(mktemp)
trap 'rm -f "$log"' EXIT
set +e
node node_modules/typescript-to-lua/dist/tstl.js -p tsconfig.json >"$log" 2>&1
rc=$?
set -e
cat "$log"
if [ "$rc" -ne 0 ]; then echo "build: tstl failed (exit $rc)" >&2; exit 1; fi
if grep -qiE "warning|error" "$log"; then echo "build: diagnostics are errors" >&2; exit 1; fi
for f in dist/lua/dyups/init.lua dist/lua/ngx/dyups.lua; do
  [ -f "$f" ] || { echo "build: $f was not emitted" >&2; exit 1; }
done
echo "build: $(find dist/lua -name '*.lua' | wc -l) Lua files in dist/lua"
