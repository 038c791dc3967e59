#!/usr/bin/env bash
# `make compose`: the docker-compose example on a machine with no image registry (Debian, as root), in one step:
#   1. a Docker engine (scripts/docker-engine.sh start: the running one, or a local dockerd; installs docker.io and
#      docker-compose when missing),
#   2. the local base image (scripts/build-base-image.sh: dyups-base:bookworm, reused when present),
#   3. the release tarball (scripts/dist.sh; the Makefile has built dist/lua),
#   4. docker-compose up -d --build, with that base for both stages and the tarball (no Node in any image),
#   5. waits until the interface answers and prints the README's curl lines for its ports.
# Where a registry is reachable, plain `docker-compose up --build` needs none of this.
#
#   scripts/compose.sh
#   env (passed to docker-compose.yml): PROXY_PORT (8080), API_PORT (8081), DEMO_BACKENDS ("8088 8089"), WORKERS,
#       LOG_LEVEL, DYUPS_IMAGE (dyups:latest), COMPOSE_PROJECT_NAME (the folder's name), BASE_IMAGE
#       (dyups-base:bookworm), DYUPS_SECRETS (./secrets: the token file's folder); DYUPS_COMPOSE_WAIT (60 s for the
#       interface to answer)
# Stop it: docker-compose down -v   (same COMPOSE_PROJECT_NAME)
set -euo pipefail
cd "$(dirname "$0")/.."

export BASE_IMAGE=${BASE_IMAGE:-dyups-base:bookworm}
export BUILD_IMAGE=$BASE_IMAGE
export PROXY_PORT=${PROXY_PORT:-8080} API_PORT=${API_PORT:-8081} DEMO_BACKENDS=${DEMO_BACKENDS:-8088 8089}
WAIT=${DYUPS_COMPOSE_WAIT:-60}

say() { echo "compose: $*"; }
die() { echo "compose: ERROR: $*" >&2; exit 1; }

scripts/docker-engine.sh start || die "no Docker engine"
scripts/build-base-image.sh || die "the base image $BASE_IMAGE could not be built"
tarball=$(scripts/dist.sh dist) || die "scripts/dist.sh failed"
export DIST_TARBALL=dist/$(basename "$tarball")

if command -v docker-compose >/dev/null 2>&1; then compose=(docker-compose)
elif docker compose version >/dev/null 2>&1; then compose=(docker compose)
else die "neither docker-compose nor the docker compose plugin is installed"; fi

say "${compose[*]} up -d --build (BASE_IMAGE=$BASE_IMAGE, DIST_TARBALL=$DIST_TARBALL)"
"${compose[@]}" up -d --build || die "docker-compose up failed"

say "waiting for the interface on 127.0.0.1:$API_PORT"
t0=$SECONDS
# any HTTP answer will do: with the token file the interface answers 401 to a request without the token
until [ "$(curl -s -o /dev/null -w '%{http_code}' "http://127.0.0.1:$API_PORT/list" 2>/dev/null)" != "000" ]; do
  if (( SECONDS - t0 > WAIT )); then
    "${compose[@]}" logs --tail=50 >&2 || true
    die "the interface did not answer on 127.0.0.1:$API_PORT within ${WAIT}s (docker-compose logs above)"
  fi
  sleep 0.5
done
read -r b1 b2 <<<"$DEMO_BACKENDS"
say "up after $((SECONDS - t0))s: proxy 127.0.0.1:$PROXY_PORT, interface 127.0.0.1:$API_PORT, demo backends $DEMO_BACKENDS"
secrets=${DYUPS_SECRETS:-secrets}
if [ -f "$secrets/admin-tokens" ]; then
  echo "  AUTH=\"Authorization: Bearer \$(awk '\$2 == \"write\" {print \$1; exit}' $secrets/admin-tokens)\""
else
  echo "  AUTH=X-No-Token:   # no token file: the interface serves loopback clients without a token"
fi
cat <<EOF
  curl -H "\$AUTH" 127.0.0.1:$API_PORT/list
  curl -H "\$AUTH" -d "server 127.0.0.1:$b2;server 127.0.0.1:$b1;" 127.0.0.1:$API_PORT/upstream/dyhost
  curl -H "host: dyhost" 127.0.0.1:$PROXY_PORT
  curl -H "\$AUTH" -X DELETE 127.0.0.1:$API_PORT/upstream/dyhost
  ${compose[*]} down -v
EOF
