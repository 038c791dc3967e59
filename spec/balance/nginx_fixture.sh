#!/usr/bin/env bash
# Regenerates spec/balance/fixtures/nginx_picks.lua: which server a real nginx (Debian's 1.22) picks for
# ip_hash (IPv4 and IPv6 clients, set through realip), `hash $arg_k`, `hash $arg_k consistent`, and the
# round-robin order, with weights and a `down` server. parity_spec.lua replays the same keys through
# dyups.balance.peer_set and expects the same servers. Needs nginx and curl; talks to 127.0.0.1 only,
# ports BASE..BASE+9 (default 23400, below the kernel's ephemeral range); stops the nginx it started.
#   bash spec/balance/nginx_fixture.sh [BASE]
set -euo pipefail
cd "$(dirname "$0")/../.."
base=${1:-23400}
nginx_bin=$(bash scripts/nginx-bin.sh)
dir=$(mktemp -d)
pid=""
cleanup() { if [ -n "$pid" ]; then kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; fi; rm -rf "$dir"; }
trap cleanup EXIT

# servers 1..7: weights 1 2 1 3 1 1 2, server 5 down (the same list the parity spec builds)
weights=(1 2 1 3 1 1 2)
servers() {
  local i
  for i in 1 2 3 4 5 6 7; do
    local extra=""
    [ "$i" = 5 ] && extra=" down"
    echo "        server 127.0.0.1:$((base + i)) weight=${weights[$((i - 1))]}$extra;"
  done
}
# the *_retry upstreams: server 2 is 127.0.0.1:BASE+9, which closes every connection (444) and has
# max_fails=0 (never marked failed), so each request that hashes to it is retried with it in `tried`
retry_servers() {
  local i
  for i in 1 2 3 4 5 6 7; do
    local addr="127.0.0.1:$((base + i))" extra=""
    [ "$i" = 2 ] && addr="127.0.0.1:$((base + 9))" && extra=" max_fails=0"
    [ "$i" = 5 ] && extra=" down"
    echo "        server $addr weight=${weights[$((i - 1))]}$extra;"
  done
}
backends() {
  local i
  for i in 1 2 3 4 5 6 7 8; do
    echo "    server { listen 127.0.0.1:$((base + i)); location / { return 200 \"$i\"; } }"
  done
  echo "    server { listen 127.0.0.1:$((base + 9)); location / { return 444; } }"
}
mkdir -p "$dir/logs" "$dir/tmp"
cat >"$dir/nginx.conf" <<CONF
worker_processes 1;
daemon off;
pid $dir/nginx.pid;
error_log $dir/logs/error.log warn;
events { worker_connections 256; }
http {
    access_log off;
    client_body_temp_path $dir/tmp/body;
    proxy_temp_path $dir/tmp/proxy;
    fastcgi_temp_path $dir/tmp/fastcgi;
    uwsgi_temp_path $dir/tmp/uwsgi;
    scgi_temp_path $dir/tmp/scgi;
    upstream u_iphash {
        ip_hash;
$(servers)
    }
    upstream u_hash {
        hash \$arg_k;
$(servers)
    }
    upstream u_chash {
        hash \$arg_k consistent;
$(servers)
    }
    upstream u_iphash_retry {
        ip_hash;
$(retry_servers)
    }
    upstream u_hash_retry {
        hash \$arg_k;
$(retry_servers)
    }
    upstream u_chash_retry {
        hash \$arg_k consistent;
$(retry_servers)
    }
    upstream u_rr {
        server 127.0.0.1:$((base + 1)) weight=5;
        server 127.0.0.1:$((base + 2));
        server 127.0.0.1:$((base + 3));
    }
    server {
        listen 127.0.0.1:$base;
        set_real_ip_from 127.0.0.1;
        real_ip_header X-Real-IP;
        proxy_next_upstream off;
        location /iphash { proxy_pass http://u_iphash; }
        location /hash { proxy_pass http://u_hash; }
        location /chash { proxy_pass http://u_chash; }
        location /rr { proxy_pass http://u_rr; }
        location /iphash_retry { proxy_pass http://u_iphash_retry; proxy_next_upstream error; }
        location /hash_retry { proxy_pass http://u_hash_retry; proxy_next_upstream error; }
        location /chash_retry { proxy_pass http://u_chash_retry; proxy_next_upstream error; }
    }
$(backends)
}
CONF
"$nginx_bin" -p "$dir" -c "$dir/nginx.conf" -e "$dir/logs/error.log" &
pid=$!
for _ in $(seq 1 100); do
  curl -s -o /dev/null "http://127.0.0.1:$((base + 8))/" 2>/dev/null && break
  sleep 0.05
done
luajit spec/balance/nginx_fixture_driver.lua "$base" >spec/balance/fixtures/nginx_picks.lua.new
mv spec/balance/fixtures/nginx_picks.lua.new spec/balance/fixtures/nginx_picks.lua
echo "wrote spec/balance/fixtures/nginx_picks.lua"
