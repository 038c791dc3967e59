#!/bin/sh
# Entrypoint of the dyups image: renders /etc/dyups/nginx.conf for the runtime found in the image, then runs
# nginx in the foreground as the container's main process.
#
#   (no arguments)          render, then exec nginx (daemon off, error log on stderr)
#   -t | -T | -V | -...     render, then exec nginx with these flags (e.g. `docker run IMAGE -t` tests the config)
#   render                  render and print the config
#   health                  exit 0 when the interface answers HTTP on 127.0.0.1:$API_PORT (no curl needed)
#   anything else           exec it (e.g. `sh`)
#
# Runtime detection: OpenResty (/usr/local/openresty/bin/openresty or `openresty` on PATH; the Lua module is built
# in) else Debian's nginx, with `load_module` lines for ndk_http_module.so and ngx_http_lua_module.so when the Lua
# module is not built in.
#
# Environment (defaults): PROXY_ADDR (127.0.0.1) PROXY_PORT (8080) API_PORT (8081, always on 127.0.0.1),
# WORKERS (auto), WORKER_CONNECTIONS (1024), LOG_LEVEL (notice), ACCESS_LOG (off; e.g. /dev/stdout),
# DEMO_BACKENDS ("8088 8089"; empty: none), UPSTREAM_CONF (/etc/dyups/upstream.conf; empty: none),
# STATE_FILE (/var/lib/dyups/state.json; empty: no persistence), NGINX_TEMPLATE (/etc/dyups/nginx.conf),
# NGINX_USER (www-data, else nobody), DYUPS_RUN (/run/dyups), DYUPS_PREFIX (/usr/local: where install.sh put the release),
# ADMIN_TOKENS_FILE (empty: no tokens, the interface serves loopback clients only; set: init()'s admin_tokens_file,
# generated with one random write token named "admin", mode 600, when it does not exist).
# Cluster mode (README "Cluster mode"): ETCD_ENDPOINTS ("127.0.0.1:2379,127.0.0.2:2379"; unset: embedded mode),
# ETCD_PREFIX (/dyups), ETCD_USER and ETCD_PASSWORD (etcd auth). UPSTREAM_CONF must then be empty.
set -eu

: "${PROXY_ADDR:=127.0.0.1}" "${PROXY_PORT:=8080}" "${API_PORT:=8081}"
: "${WORKERS:=auto}" "${WORKER_CONNECTIONS:=1024}" "${LOG_LEVEL:=notice}" "${ACCESS_LOG:=off}"
: "${DEMO_BACKENDS=8088 8089}" "${UPSTREAM_CONF=/etc/dyups/upstream.conf}" "${STATE_FILE=/var/lib/dyups/state.json}"
: "${NGINX_TEMPLATE:=/etc/dyups/nginx.conf}" "${DYUPS_RUN:=/run/dyups}" "${DYUPS_PREFIX:=/usr/local}"
export PROXY_ADDR PROXY_PORT API_PORT WORKERS WORKER_CONNECTIONS LOG_LEVEL ACCESS_LOG DEMO_BACKENDS \
  UPSTREAM_CONF STATE_FILE NGINX_TEMPLATE DYUPS_RUN DYUPS_PREFIX

log() { echo "dyups-entrypoint: $*" >&2; }
die() { echo "dyups-entrypoint: ERROR: $*" >&2; exit 1; }

health() {
  # bash's /dev/tcp when there is bash, else curl: any HTTP status line means nginx and the interface answer
  if command -v bash >/dev/null 2>&1; then
    bash -c 'exec 3<>/dev/tcp/127.0.0.1/$0 && printf "GET /list HTTP/1.0\r\nHost: localhost\r\n\r\n" >&3 && head -n1 <&3 | grep -q "^HTTP/"' "$API_PORT"
  else
    curl -sS -o /dev/null "http://127.0.0.1:$API_PORT/list"
  fi
}
[ "${1:-}" = health ] && { health; exit $?; }

# The runtime
if [ -x /usr/local/openresty/bin/openresty ]; then NGINX_BIN=/usr/local/openresty/bin/openresty
elif command -v openresty >/dev/null 2>&1; then NGINX_BIN=$(command -v openresty)
elif [ -x /usr/sbin/nginx ]; then NGINX_BIN=/usr/sbin/nginx
elif command -v nginx >/dev/null 2>&1; then NGINX_BIN=$(command -v nginx)
else die "neither openresty nor nginx is installed in this image"; fi

# OpenResty has the Lua module built in. Debian's nginx loads it (and NDK) as dynamic modules. Another nginx may have
# it compiled in: OpenResty's -V says "ngx_lua-0.10.x", a plain build "lua-nginx-module".
LOAD_MODULES=""
moddir=/usr/lib/nginx/modules
case "$NGINX_BIN" in
  */openresty) ;;
  *)
    if [ -f "$moddir/ngx_http_lua_module.so" ]; then
      [ -f "$moddir/ndk_http_module.so" ] && LOAD_MODULES="load_module $moddir/ndk_http_module.so;
"
      LOAD_MODULES="${LOAD_MODULES}load_module $moddir/ngx_http_lua_module.so;"
    elif ! "$NGINX_BIN" -V 2>&1 | grep -Eq 'ngx_lua|lua-nginx-module'; then
      die "$NGINX_BIN has no Lua module built in and $moddir/ngx_http_lua_module.so is missing"
    fi
    ;;
esac

# Workers' user (only when the master runs as root), owning the state folder so that they can write the state file
USER_LINE="# not started as root: no user directive"
if [ "$(id -u)" = 0 ]; then
  if [ -z "${NGINX_USER:-}" ]; then
    if id www-data >/dev/null 2>&1; then NGINX_USER=www-data; else NGINX_USER=nobody; fi
  fi
  USER_LINE="user $NGINX_USER $(id -gn "$NGINX_USER");"
fi

mkdir -p "$DYUPS_RUN"
if [ -n "$STATE_FILE" ]; then
  state_dir=$(dirname "$STATE_FILE")
  mkdir -p "$state_dir"
  if [ "$(id -u)" = 0 ]; then
    chown "$NGINX_USER:$(id -gn "$NGINX_USER")" "$state_dir"
    [ -e "$STATE_FILE" ] && chown "$NGINX_USER:$(id -gn "$NGINX_USER")" "$STATE_FILE"
  fi
fi

# The demo upstream.conf follows $DEMO_BACKENDS (while it carries its "dyups-demo:" marker)
if [ -n "$UPSTREAM_CONF" ]; then
  [ -f "$UPSTREAM_CONF" ] || die "UPSTREAM_CONF=$UPSTREAM_CONF does not exist"
  if grep -q '^# dyups-demo:' "$UPSTREAM_CONF"; then
    p1=$(echo "$DEMO_BACKENDS" | awk '{print $1}'); p2=$(echo "$DEMO_BACKENDS" | awk '{print $2}')
    sed -e "s/127\.0\.0\.1:8088;/127.0.0.1:${p1:-8088};/" -e "s/127\.0\.0\.1:8089;/127.0.0.1:${p2:-8089};/" \
      "$UPSTREAM_CONF" >"$DYUPS_RUN/upstream.conf"
    UPSTREAM_CONF=$DYUPS_RUN/upstream.conf
  fi
fi

# init() options as a Lua table
lua_str() { printf '"%s"' "$(printf '%s' "$1" | sed -e 's/\\/\\\\/g' -e 's/"/\\"/g')"; }
DYUPS_INIT_OPTS="{"
[ -n "$UPSTREAM_CONF" ] && DYUPS_INIT_OPTS="$DYUPS_INIT_OPTS upstream_conf = $(lua_str "$UPSTREAM_CONF"),"
[ -n "$STATE_FILE" ] && DYUPS_INIT_OPTS="$DYUPS_INIT_OPTS state_file = $(lua_str "$STATE_FILE"),"
if [ -n "${ADMIN_TOKENS_FILE:-}" ]; then
  if [ ! -s "$ADMIN_TOKENS_FILE" ]; then
    mkdir -p "$(dirname "$ADMIN_TOKENS_FILE")"
    (umask 077; printf '# TOKEN ROLE NAME, read by init() in the master (root)\n%s write admin\n' \
      "$(head -c 32 /dev/urandom | od -An -tx1 | tr -d ' \n')" >"$ADMIN_TOKENS_FILE") || die "cannot write $ADMIN_TOKENS_FILE"
    log "generated an admin token in $ADMIN_TOKENS_FILE"
  fi
  DYUPS_INIT_OPTS="$DYUPS_INIT_OPTS admin_tokens_file = $(lua_str "$ADMIN_TOKENS_FILE"),"
fi
if [ -n "${ETCD_ENDPOINTS:-}" ]; then
  [ -z "$UPSTREAM_CONF" ] || die "ETCD_ENDPOINTS (cluster mode) needs UPSTREAM_CONF= (empty): etcd is the source of truth"
  eps=""
  for ep in $(echo "$ETCD_ENDPOINTS" | tr ',' ' '); do eps="$eps $(lua_str "$ep"),"; done
  cl="etcd = {${eps%,} }, prefix = $(lua_str "${ETCD_PREFIX:-/dyups}")"
  [ -n "${ETCD_USER:-}" ] && cl="$cl, user = $(lua_str "$ETCD_USER"), password = $(lua_str "${ETCD_PASSWORD:-}")"
  DYUPS_INIT_OPTS="$DYUPS_INIT_OPTS cluster = { $cl },"
fi
DYUPS_INIT_OPTS="${DYUPS_INIT_OPTS%,} }"

DEMO_BLOCKS=""
for p in $DEMO_BACKENDS; do
  case "$p" in *[!0-9]*) die "DEMO_BACKENDS must be port numbers: $DEMO_BACKENDS" ;; esac
  DEMO_BLOCKS="${DEMO_BLOCKS}server { listen 127.0.0.1:$p; location / { return 200 \"$p\"; } }
"
done
for v in PROXY_PORT API_PORT; do
  eval "val=\$$v"
  case "$val" in ''|*[!0-9]*) die "$v must be a port number: $val" ;; esac
done

export LOAD_MODULES USER_LINE DEMO_BLOCKS DYUPS_INIT_OPTS
[ -f "$NGINX_TEMPLATE" ] || die "NGINX_TEMPLATE=$NGINX_TEMPLATE does not exist"
conf=$DYUPS_RUN/nginx.conf
# ${UPPER} from the environment (an unset one is an error; comment lines are left alone); marker lines replaced
awk '
  function block(text, indent,   n, i, lines) { n = split(text, lines, "\n"); for (i = 1; i <= n; i++) if (lines[i] != "") print indent lines[i] }
  /^[ \t]*@LOAD_MODULES@[ \t]*$/  { match($0, /^[ \t]*/); block(ENVIRON["LOAD_MODULES"], substr($0, 1, RLENGTH)); next }
  /^[ \t]*@USER@[ \t]*$/          { match($0, /^[ \t]*/); block(ENVIRON["USER_LINE"], substr($0, 1, RLENGTH)); next }
  /^[ \t]*@DEMO_BACKENDS@[ \t]*$/ { match($0, /^[ \t]*/); block(ENVIRON["DEMO_BLOCKS"], substr($0, 1, RLENGTH)); next }
  /^[ \t]*#/ { print; next }   # comment lines are copied as they are
  {
    line = $0; out = ""
    while ((i = index(line, "${")) > 0) {
      rest = substr(line, i + 2); j = index(rest, "}")
      if (j == 0) break
      name = substr(rest, 1, j - 1)
      if (name ~ /^[A-Z_][A-Z0-9_]*$/) {
        if (!(name in ENVIRON)) { printf "dyups-entrypoint: ERROR: %s line %d uses ${%s}, which is not set\n", FILENAME, NR, name > "/dev/stderr"; bad = 1 }
        out = out substr(line, 1, i - 1) ENVIRON[name]
      } else out = out substr(line, 1, i + 1 + j)
      line = substr(rest, j + 1)
    }
    print out line
  }
  END { exit bad }
' "$NGINX_TEMPLATE" >"$conf.tmp" || die "could not render $NGINX_TEMPLATE"
mv "$conf.tmp" "$conf"

case "${1:-}" in
  render) cat "$conf"; exit 0 ;;
  ""|-*) ;;
  *) exec "$@" ;;
esac

log "$("$NGINX_BIN" -v 2>&1 | sed 's/^nginx version: //'), proxy ${PROXY_ADDR}:${PROXY_PORT}, interface 127.0.0.1:${API_PORT}, workers ${WORKERS}, demo backends: ${DEMO_BACKENDS:-none}, upstream_conf: ${UPSTREAM_CONF:-none}, state_file: ${STATE_FILE:-none}, etcd: ${ETCD_ENDPOINTS:-none (embedded mode)}"
exec "$NGINX_BIN" -p "$DYUPS_RUN" -e stderr -c "$conf" "$@"
