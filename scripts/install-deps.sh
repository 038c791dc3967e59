#!/usr/bin/env bash
# Installs what the project needs to build, run and test, idempotently, and verifies it.
#   runtime: OpenResty if `openresty` is on PATH, else Debian's nginx + lua-nginx-module + lua-resty-core.
#   tools:   luajit2 + busted (specs), dnsmasq (DNS tests), wrk (benchmarks), curl, Node packages (npm ci),
#            luarocks (make rock, and the install suite's rock; Debian's, with liblua5.1-0-dev: no LuaJIT headers),
#            prometheus (promtool and a real Prometheus for the metrics suite), chromium (the dashboard suite,
#            driven by the npm package puppeteer-core: Debian's browser, never a download).
# Never installs Debian's `luajit`/`libluajit-5.1-dev`: they remove libnginx-mod-http-lua and lua-resty-core.
# Usage: scripts/install-deps.sh [--test | --bench | --rock]   (--test adds what only the test suites need; --bench
# that and valgrind, for scripts/bench-instructions.mjs; --rock only luarocks)
set -euo pipefail
cd "$(dirname "$0")/.."

want_test=0
want_bench=0
[ "${1:-}" = "--test" ] && want_test=1
[ "${1:-}" = "--bench" ] && want_test=1 && want_bench=1
if [ "${1:-}" = "--rock" ]; then
  command -v luarocks >/dev/null 2>&1 && exit 0
  [ "$(id -u)" = 0 ] || { echo "install-deps: need root to install luarocks" >&2; exit 1; }
  echo "install-deps: installing luarocks"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends luarocks zip >/dev/null
  command -v luarocks >/dev/null 2>&1 || { echo "install-deps: luarocks did not install" >&2; exit 1; }
  exit 0
fi

runtime_pkgs="nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-nginx-dns lua-cjson"
tool_pkgs="luajit2 lua-busted curl"
test_pkgs="dnsmasq-base wrk luarocks zip etcd-server prometheus chromium"

missing=""
have_pkg() { dpkg-query -W -f='${Status}' "$1" 2>/dev/null | grep -q "install ok installed"; }
pkgs="$tool_pkgs"
command -v openresty >/dev/null 2>&1 || pkgs="$runtime_pkgs $pkgs"
[ "$want_test" = 1 ] && pkgs="$pkgs $test_pkgs"
[ "$want_bench" = 1 ] && pkgs="$pkgs valgrind"
for p in $pkgs; do have_pkg "$p" || missing="$missing $p"; done
if [ -n "$missing" ]; then
  [ "$(id -u)" = 0 ] || { echo "install-deps: need root to install:$missing" >&2; exit 1; }
  echo "install-deps: installing$missing"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  # shellcheck disable=SC2086
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi

# Verify: the packages are there, the Lua module is loadable, luajit is LuaJIT 2.1 (luajit2), busted runs.
for p in $pkgs; do have_pkg "$p" || { echo "install-deps: $p did not install" >&2; exit 1; }; done
if ! command -v openresty >/dev/null 2>&1; then
  [ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] || { echo "install-deps: ngx_http_lua_module.so missing" >&2; exit 1; }
  [ -f /usr/share/lua/5.1/resty/core.lua ] || { echo "install-deps: lua-resty-core missing" >&2; exit 1; }
fi
luajit -v | grep -q "LuaJIT 2.1" || { echo "install-deps: luajit is not LuaJIT 2.1" >&2; exit 1; }

# Node packages, exactly as locked.
if [ ! -d node_modules/typescript-to-lua ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  npm ci --no-audit --no-fund --loglevel=error
fi
echo "install-deps: ok ($(scripts/nginx-bin.sh) $("$(scripts/nginx-bin.sh)" -v 2>&1 | sed 's/.*version: //'))"
