#!/usr/bin/env bash
# `make run`: a real nginx (2 workers) with the plugin, two demo backends, the proxy and the interface,
# in the foreground. Ctrl-C stops everything it started. Ports: PROXY_PORT (8080), API_PORT (8081),
# BACKEND_PORTS ("8088 8089"). State is kept in RUN_DIR (default ./run) across runs.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$(pwd)
PROXY_PORT=${PROXY_PORT:-8080}
API_PORT=${API_PORT:-8081}
read -r B1 B2 <<<"${BACKEND_PORTS:-8088 8089}"
RUN_DIR=${RUN_DIR:-$ROOT/run}
NGINX=$(scripts/nginx-bin.sh)
mkdir -p "$RUN_DIR/conf" "$RUN_DIR/logs" "$RUN_DIR/state"
# workers run as nobody when nginx starts as root: they write the state file
[ "$(id -u)" = 0 ] && chown nobody "$RUN_DIR/state" && chmod 755 "$RUN_DIR"

modules=""
[ -f /usr/lib/nginx/modules/ngx_http_lua_module.so ] && [[ "$NGINX" != *openresty* ]] && modules="load_module /usr/lib/nginx/modules/ndk_http_module.so;
load_module /usr/lib/nginx/modules/ngx_http_lua_module.so;"

# The interface's tokens (secure setup): one write and one read token, readable by their owner only. init()
# reads the file in the master, before the workers drop privileges. Delete it to get new tokens.
TOKENS=$RUN_DIR/admin-tokens
rand() { head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n'; }
[ -s "$TOKENS" ] || (umask 077; printf '# TOKEN ROLE NAME\n%s write admin\n%s read viewer\n' "$(rand)" "$(rand)" >"$TOKENS")

[ -f "$RUN_DIR/upstream.conf" ] || cat > "$RUN_DIR/upstream.conf" <<EOC
# Initial upstreams (nginx syntax). Changes made through the interface are kept in state.json.
upstream host1 { server 127.0.0.1:$B1; }
upstream host2 { server 127.0.0.1:$B2; }
EOC

cat > "$RUN_DIR/conf/nginx.conf" <<EOC
$modules
daemon off;
master_process on;
worker_processes 2;
pid $RUN_DIR/nginx.pid;
error_log stderr notice;
events { worker_connections 1024; }
http {
    access_log off;
    client_body_temp_path $RUN_DIR/body; proxy_temp_path $RUN_DIR/proxy;
    fastcgi_temp_path $RUN_DIR/fcgi; uwsgi_temp_path $RUN_DIR/uwsgi; scgi_temp_path $RUN_DIR/scgi;

    lua_package_path "$ROOT/dist/lua/?.lua;$ROOT/dist/lua/?/init.lua;;";
    include $ROOT/nginx/dyups.conf;
    init_by_lua_block {
        require("dyups").init({ upstream_conf = "$RUN_DIR/upstream.conf", state_file = "$RUN_DIR/state/state.json",
                                admin_tokens_file = "$TOKENS" })
    }
    init_worker_by_lua_block { require("dyups").init_worker() }

    # demo backends
    server { listen 127.0.0.1:$B1; location / { return 200 "$B1\n"; } }
    server { listen 127.0.0.1:$B2; location / { return 200 "$B2\n"; } }

    # the proxy: the Host header names the upstream
    server {
        listen 127.0.0.1:$PROXY_PORT;
        location / {
            set \$dyups_upstream \$host;
            proxy_pass http://dyups;
        }
    }
    # the interface: tokens from $TOKENS (Authorization: Bearer TOKEN), bound to loopback as well
    server {
        listen 127.0.0.1:$API_PORT;
        location / { content_by_lua_block { require("dyups").interface() } }
    }
}
EOC

"$NGINX" -t -q -p "$RUN_DIR" -c conf/nginx.conf
cat <<EOM
dyups is running: proxy 127.0.0.1:$PROXY_PORT, interface 127.0.0.1:$API_PORT, backends $B1 and $B2.
The interface needs a token (a write and a read token are in $TOKENS). Try:
  AUTH="Authorization: Bearer \$(awk '\$2 == "write" {print \$1; exit}' $TOKENS)"
  curl -H "\$AUTH" 127.0.0.1:$API_PORT/list
  curl -H "\$AUTH" 127.0.0.1:$API_PORT/detail
  curl -H "\$AUTH" -d "server 127.0.0.1:$B1; server 127.0.0.1:$B2;" 127.0.0.1:$API_PORT/upstream/dyhost
  curl -H "Host: dyhost" 127.0.0.1:$PROXY_PORT/      # again and again: $B1 and $B2 in turn
  curl -H "\$AUTH" 127.0.0.1:$API_PORT/status
  curl -H "\$AUTH" 127.0.0.1:$API_PORT/metrics             # Prometheus
  curl -H "\$AUTH" -X DELETE 127.0.0.1:$API_PORT/upstream/dyhost
The status page: http://127.0.0.1:$API_PORT/dashboard (user: anything, password: a token of $TOKENS).
Ctrl-C stops nginx. Config and state: $RUN_DIR
EOM
"$NGINX" -p "$RUN_DIR" -c conf/nginx.conf &
pid=$!
trap 'kill -QUIT $pid 2>/dev/null; wait $pid 2>/dev/null; exit 0' INT TERM
wait $pid
