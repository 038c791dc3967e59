#!/bin/sh
# dyups for OpenResty: installs the compiled Lua and the nginx snippet from a release folder (the unpacked
# `make dist` tarball, where this script is `install.sh`). Plain POSIX sh: no Node, no make, no LuaRocks.
# `make install` / `make uninstall` and the product image (Dockerfile) run this same script.
#
#   ./install.sh [--prefix DIR] [--destdir DIR]          install (PREFIX default /usr/local)
#   ./install.sh --uninstall [--prefix DIR] [--destdir DIR]
#   env PREFIX, DESTDIR work too (flags win). DESTDIR stages a package: files go to DESTDIR/PREFIX/...
#
# Installs
#   PREFIX/share/lua/5.1/dyups/...        the modules (require "dyups"; the lualib helpers are dyups.lualib_bundle)
#   PREFIX/share/lua/5.1/ngx/dyups.lua    require "ngx.dyups" (the same module)
#   PREFIX/share/dyups/dyups.conf         the snippet nginx includes at http {} level
#   PREFIX/share/dyups/dyups-http.conf, dyups-location.conf   the per-location form of it
#   PREFIX/share/dyups/installed-files    what this script created: files ("f PATH") and folders that did not
#                                         exist before ("d PATH"), relative to PREFIX
# and nginx.conf needs, at http {} level:
#   lua_package_path "PREFIX/share/lua/5.1/?.lua;PREFIX/share/lua/5.1/?/init.lua;;";
#   include PREFIX/share/dyups/dyups.conf;
#
# Uninstall removes exactly the files in installed-files, then those folders when they are empty (a folder that
# holds anything else stays; PREFIX itself, when this script had to create it, stays too). Installing over an
# earlier install uninstalls it first, so no stale module of the older version remains.
set -eu

usage() { sed -n '2,12p' "$0" | sed 's/^# \{0,1\}//' >&2; exit 2; }
say() { echo "dyups-install: $*"; }
die() { echo "dyups-install: ERROR: $*" >&2; exit 1; }

action=install
PREFIX=${PREFIX:-/usr/local}
DESTDIR=${DESTDIR:-}
while [ $# -gt 0 ]; do
  case "$1" in
    --prefix) [ $# -ge 2 ] || usage; PREFIX=$2; shift 2 ;;
    --prefix=*) PREFIX=${1#*=}; shift ;;
    --destdir) [ $# -ge 2 ] || usage; DESTDIR=$2; shift 2 ;;
    --destdir=*) DESTDIR=${1#*=}; shift ;;
    --uninstall) action=uninstall; shift ;;
    -h|--help) usage ;;
    *) echo "dyups-install: unknown argument: $1" >&2; usage ;;
  esac
done
case "$PREFIX" in /*) ;; *) die "--prefix must be an absolute path: $PREFIX" ;; esac
PREFIX=${PREFIX%/}
ROOT=$DESTDIR$PREFIX               # where the files go
LUA_REL=share/lua/5.1
CONF_REL=share/dyups
MANIFEST_REL=$CONF_REL/installed-files
SRC=$(cd "$(dirname "$0")" && pwd)

uninstall() {
  manifest=$ROOT/$MANIFEST_REL
  if [ ! -f "$manifest" ]; then
    say "nothing to uninstall under $ROOT (no $MANIFEST_REL)"
    return 0
  fi
  n=0
  while read -r kind rel; do
    case "$rel" in ''|/*|*..*) die "bad line in $manifest: $kind $rel" ;; esac
    if [ "$kind" = f ]; then
      rm -f "$ROOT/$rel"
      n=$((n + 1))
    fi
  done <"$manifest"
  # the folders this script created, deepest first (recorded parents first); one that holds anything else stays
  dirs=$(sed -n 's/^d //p' "$manifest" | awk '{ a[NR] = $0 } END { for (i = NR; i > 0; i--) print a[i] }')
  rm -f "$manifest"
  for rel in $dirs; do rmdir "$ROOT/$rel" 2>/dev/null || true; done
  say "removed $n files from $ROOT"
}

if [ "$action" = uninstall ]; then
  uninstall
  exit 0
fi

# --- install
[ -f "$SRC/lib/dyups/init.lua" ] && [ -f "$SRC/lib/ngx/dyups.lua" ] && [ -f "$SRC/nginx/dyups.conf" ] \
  || die "$SRC is not a dyups release folder (lib/dyups/init.lua, lib/ngx/dyups.lua, nginx/dyups.conf)"
version=$(sed -n 's/.*VERSION = "\([^"]*\)".*/\1/p' "$SRC/lib/dyups/version.lua" 2>/dev/null || true)

if [ -f "$ROOT/$MANIFEST_REL" ]; then
  say "replacing the dyups installed under $ROOT"
  uninstall
fi

list=$(mktemp)
trap 'rm -f "$list"' EXIT
# mkdir -p that records every folder it creates ("d REL"), parents first (a loop: sh has no local variables)
ensure_dir() {
  missing=""
  rel=$1
  while [ "$rel" != . ] && [ ! -d "$ROOT/$rel" ]; do
    missing="$rel $missing"
    rel=$(dirname "$rel")
  done
  for rel in $missing; do
    mkdir -m 0755 "$ROOT/$rel"
    echo "d $rel" >>"$list"
  done
}
copy() { # $1 source file, $2 destination relative to PREFIX
  ensure_dir "$(dirname "$2")"
  cp "$1" "$ROOT/$2"
  chmod 0644 "$ROOT/$2"
  echo "f $2" >>"$list"
}

[ -d "$ROOT" ] || mkdir -p -m 0755 "$ROOT"
files=$(cd "$SRC/lib" && find dyups ngx -type f -name '*.lua' | LC_ALL=C sort)
for f in $files; do copy "$SRC/lib/$f" "$LUA_REL/$f"; done
copy "$SRC/nginx/dyups.conf" "$CONF_REL/dyups.conf"
for f in dyups-http.conf dyups-location.conf; do [ -f "$SRC/nginx/$f" ] && copy "$SRC/nginx/$f" "$CONF_REL/$f"; done
ensure_dir "$CONF_REL"
cp "$list" "$ROOT/$MANIFEST_REL"
chmod 0644 "$ROOT/$MANIFEST_REL"
say "installed dyups ${version:-?} under $ROOT ($(grep -c '^f ' "$list") files)"
say "nginx.conf, http {} level:"
say "  lua_package_path \"$PREFIX/$LUA_REL/?.lua;$PREFIX/$LUA_REL/?/init.lua;;\";"
say "  include $PREFIX/$CONF_REL/dyups.conf;"
say "(or the per-location form: $PREFIX/$CONF_REL/dyups-http.conf at http {} level, dyups-location.conf in each dyups location)"
