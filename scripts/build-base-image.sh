#!/usr/bin/env bash
# Builds the local base image dyups-base:bookworm when it is absent (no image registry is reachable here):
# debootstrap a minimal Debian bookworm from the mirror in this machine's apt sources, install nginx and the
# Lua packages into it, clean the apt caches and `docker import` the folder. Reuses an existing image.
#
#   scripts/build-base-image.sh [--force]      --force rebuilds even if the image exists
#   env BASE_IMAGE (default dyups-base:bookworm), DEBIAN_SUITE (default bookworm), DEBIAN_MIRROR (override)
#
# Needs root and a running engine (scripts/docker-engine.sh start). Installs debootstrap via apt if missing.
set -euo pipefail
cd "$(dirname "$0")/.."

IMAGE=${BASE_IMAGE:-dyups-base:bookworm}
SUITE=${DEBIAN_SUITE:-bookworm}
PKGS="nginx libnginx-mod-http-lua lua-resty-core lua-resty-lrucache lua-nginx-dns lua-cjson curl ca-certificates"

say() { echo "build-base-image: $*"; }
die() { echo "build-base-image: ERROR: $*" >&2; exit 1; }

force=0
[ "${1:-}" = "--force" ] && force=1

docker info >/dev/null 2>&1 || die "no Docker engine answers; run scripts/docker-engine.sh start"
if [ "$force" = 0 ] && docker image inspect "$IMAGE" >/dev/null 2>&1; then
  say "$IMAGE exists ($(docker image inspect -f '{{.Created}}' "$IMAGE")); reusing it"
  exit 0
fi
[ "$(id -u)" = 0 ] || die "need root (debootstrap, chroot)"

# The mirror of this machine's apt sources: first URIs of a deb822 stanza whose Suites has "$SUITE" itself
# (not -security/-updates), else the first matching "deb URL $SUITE" line of sources.list. Never hard-coded.
find_mirror() {
  local f
  for f in /etc/apt/sources.list.d/*.sources; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '
      function flush() { if (types ~ /(^|[ \t])deb([ \t]|$)/ && suites ~ ("(^|[ \t])" suite "([ \t]|$)") && uris != "") { print uris; found = 1; exit } types = suites = uris = "" }
      /^[ \t]*#/ { next }
      /^[ \t]*$/ { flush(); next }
      tolower($1) == "types:"  { $1 = ""; types = $0 }
      tolower($1) == "suites:" { $1 = ""; suites = $0 }
      tolower($1) == "uris:"   { uris = $2 }
      END { if (!found) flush() }
    ' "$f"
  done | head -n1
  for f in /etc/apt/sources.list /etc/apt/sources.list.d/*.list; do
    [ -f "$f" ] || continue
    awk -v suite="$SUITE" '$1 == "deb" { i = 2; if ($2 ~ /^\[/) { while ($i !~ /\]$/) i++; i++ } if ($(i + 1) == suite) { print $i; exit } }' "$f"
  done | head -n1
}
MIRROR=${DEBIAN_MIRROR:-$(find_mirror | head -n1)}
[ -n "$MIRROR" ] || die "no '$SUITE' mirror found in /etc/apt/sources.list.d/*.sources or /etc/apt/sources.list (set DEBIAN_MIRROR)"

if ! command -v debootstrap >/dev/null 2>&1; then
  say "installing debootstrap (apt)"
  DEBIAN_FRONTEND=noninteractive apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends debootstrap >/dev/null
  command -v debootstrap >/dev/null 2>&1 || die "debootstrap did not install"
fi

t0=$SECONDS
dir=$(mktemp -d /var/tmp/dyups-base.XXXXXX)
cleanup() {
  local m
  for m in "$dir/proc" "$dir/sys" "$dir/dev/pts"; do mountpoint -q "$m" 2>/dev/null && umount -l "$m"; done
  # only remove the folder once nothing is mounted below it
  if ! grep -q " $dir/" /proc/mounts; then rm -rf "$dir"; else echo "build-base-image: left $dir (still mounted)" >&2; fi
}
trap cleanup EXIT

say "debootstrap --variant=minbase $SUITE $dir $MIRROR"
log=$dir.log
if ! debootstrap --variant=minbase "$SUITE" "$dir" "$MIRROR" >"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "debootstrap failed (log: $log)"
fi
say "debootstrap done in $((SECONDS - t0))s"

# Same apt sources as this machine (same mirror, plus its updates/security suites), DNS, no service starts.
if compgen -G "/etc/apt/sources.list.d/*.sources" >/dev/null; then
  rm -f "$dir/etc/apt/sources.list"
  cp /etc/apt/sources.list.d/*.sources "$dir/etc/apt/sources.list.d/"
fi
[ -f /etc/apt/sources.list ] && [ -s /etc/apt/sources.list ] && grep -qE '^deb ' /etc/apt/sources.list && cp /etc/apt/sources.list "$dir/etc/apt/sources.list"
cp -L /etc/resolv.conf "$dir/etc/resolv.conf" 2>/dev/null || true
printf '#!/bin/sh\nexit 101\n' >"$dir/usr/sbin/policy-rc.d"; chmod +x "$dir/usr/sbin/policy-rc.d"
mount -t proc proc "$dir/proc"

say "installing $PKGS"
if ! chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin DEBIAN_FRONTEND=noninteractive LANG=C \
    sh -c "apt-get update -qq && apt-get install -y -qq --no-install-recommends $PKGS" >>"$log" 2>&1; then
  tail -n 30 "$log" >&2
  die "apt-get install in the chroot failed (log: $log)"
fi
chroot "$dir" /usr/bin/env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin sh -c \
  'nginx -v && test -f /usr/lib/nginx/modules/ngx_http_lua_module.so && test -f /usr/share/lua/5.1/resty/core.lua' >>"$log" 2>&1 \
  || { tail -n 10 "$log" >&2; die "nginx or the Lua module is missing in the chroot"; }
umount -l "$dir/proc"

# Slim and clean: apt caches and lists, docs, the build host's resolv.conf, the policy-rc.d stub.
chroot "$dir" apt-get clean
rm -rf "$dir"/var/lib/apt/lists/* "$dir"/var/cache/apt/*.bin "$dir"/var/cache/debconf/*-old \
  "$dir"/usr/share/doc/* "$dir"/usr/share/man/* "$dir"/usr/share/info/* "$dir"/var/log/*.log \
  "$dir"/var/log/apt/* "$dir/usr/sbin/policy-rc.d" "$dir"/tmp/*
: >"$dir/etc/resolv.conf"

nginx_version=$(chroot "$dir" nginx -v 2>&1 | sed 's/.*nginx\///')
say "importing $IMAGE ($(du -sh "$dir" | cut -f1), nginx $nginx_version)"
tar --numeric-owner -C "$dir" -c . | docker import \
  -c 'ENV PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
  -c 'ENV LANG=C.UTF-8' \
  -c "LABEL org.dyups.base=debootstrap-$SUITE org.dyups.mirror=$MIRROR org.dyups.nginx=$nginx_version" \
  -c 'CMD ["/bin/bash"]' \
  - "$IMAGE" >/dev/null
rm -f "$log"
say "built $IMAGE in $((SECONDS - t0))s"
