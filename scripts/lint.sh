#!/usr/bin/env bash
# ESLint over src/ (eslint.config.mjs): what compiles badly with TypeScriptToLua is an error.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -d node_modules/eslint ] || npm ci --no-audit --no-fund --loglevel=error
exec node node_modules/eslint/bin/eslint.js --max-warnings=0 src
