#!/usr/bin/env bash
# Container tests (test/containers/*.test.mjs, testcontainers on the host network):
#   1. a Docker engine (scripts/docker-engine.sh start: the running one, or a local dockerd it starts),
#   2. the base image (scripts/build-base-image.sh: dyups-base:bookworm, reused when present),
#   3. the product image from the current dist/lua (tools/build.sh first when dist/lua is missing), packed by
#      scripts/dist.sh into dist/dyups-VERSION.tar.gz and installed in the image by its install.sh (the Dockerfile's
#      DIST_TARBALL; BUILD_IMAGE is the base image too: no Node image, no registry),
#   4. node --test, one file at a time; TAP on stdout (the runner's "# pass N" / "# fail N" lines), and also in
#      $TAP_OUT when set (scripts/test.sh reads it),
#   5. removes this run's containers, and stops the engine only if step 1 started it and no other run uses it
#      (docker-engine.sh release).
#
#   scripts/containers.sh [test files...]
#   env BASE_IMAGE (dyups-base:bookworm; e.g. openresty/openresty:1.25.3.2-bookworm with a registry),
#       DYUPS_IMAGE_TAG (dyups:containers-test), DYUPS_KEEP_ENGINE=1 (never stop the engine)
set -uo pipefail
cd "$(dirname "$0")/.."

BASE_IMAGE=${BASE_IMAGE:-dyups-base:bookworm}
TAG=${DYUPS_IMAGE_TAG:-dyups:containers-test}
export DYUPS_TEST_RUN=${DYUPS_TEST_RUN:-ct$$}
export TESTCONTAINERS_RYUK_DISABLED=true TESTCONTAINERS_HOST_OVERRIDE=127.0.0.1

say() { echo "containers: $*"; }
fail() { echo "containers: ERROR: $*" >&2; [ -n "${TAP_OUT:-}" ] && printf 'not ok 1 - %s\n# pass 0\n# fail 1\n' "$*" >"$TAP_OUT"; exit 1; }
secs() { echo "$(( $(date +%s%N) / 1000000 - $1 ))" | awk '{printf "%.1fs", $1 / 1000}'; }
now() { echo $(( $(date +%s%N) / 1000000 )); }

export DYUPS_ENGINE_HOLDER=$$
t=$(now)
scripts/docker-engine.sh start || fail "no Docker engine: the container tests cannot run"
t_engine=$(secs "$t")

cleanup() {
  local ids
  ids=$(docker ps -aq --filter "label=org.dyups.test-run=$DYUPS_TEST_RUN" 2>/dev/null)
  if [ -n "$ids" ]; then
    say "removing leftover containers of this run: $(echo "$ids" | tr '\n' ' ')"
    # shellcheck disable=SC2086
    docker rm -f -v $ids >/dev/null 2>&1 || true
  fi
  ids=$(docker volume ls -q --filter "name=dyups-ct-$DYUPS_TEST_RUN-" 2>/dev/null)
  # shellcheck disable=SC2086
  [ -z "$ids" ] || docker volume rm -f $ids >/dev/null 2>&1 || true
  scripts/docker-engine.sh release
}
trap cleanup EXIT

t=$(now)
scripts/build-base-image.sh || fail "the base image $BASE_IMAGE could not be built"
t_base=$(secs "$t")

if [ ! -f dist/lua/dyups/init.lua ]; then
  say "dist/lua is missing: building it"
  bash tools/build.sh || fail "tools/build.sh failed"
fi
tarball=$(scripts/dist.sh dist) || fail "scripts/dist.sh failed"
dist_stages() { docker images -q --no-trunc --filter dangling=true --filter label=org.dyups.stage=dist | sort; }
stages_before=$(dist_stages)
t=$(now)
old_id=$(docker image inspect -f '{{.Id}}' "$TAG" 2>/dev/null || true)
say "building $TAG FROM $BASE_IMAGE with dist/$(basename "$tarball")"
if ! build_log=$(docker build --build-arg "BASE_IMAGE=$BASE_IMAGE" --build-arg "BUILD_IMAGE=$BASE_IMAGE" \
    --build-arg "DIST_TARBALL=dist/$(basename "$tarball")" -t "$TAG" . 2>&1); then
  echo "$build_log" >&2
  fail "docker build failed"
fi
new_id=$(docker image inspect -f '{{.Id}}' "$TAG")
# the Dockerfile's dist stage, left untagged by this build (not one that was there before): remove it
for id in $(comm -13 <(echo "$stages_before") <(dist_stages)); do docker rmi "$id" >/dev/null 2>&1 || true; done
# the previous build of this tag, now untagged: remove it (only that one)
if [ -n "$old_id" ] && [ "$old_id" != "$new_id" ] && [ -z "$(docker image inspect -f '{{join .RepoTags ","}}' "$old_id" 2>/dev/null)" ]; then
  docker rmi "$old_id" >/dev/null 2>&1 || true
fi
t_image=$(secs "$t")
export DYUPS_IMAGE=$TAG DYUPS_BASE_IMAGE=$BASE_IMAGE

files=("$@")
[ ${#files[@]} -gt 0 ] || mapfile -t files < <(ls test/containers/*.test.mjs)
reporters=(--test-reporter=tap --test-reporter-destination=stdout)
[ -n "${TAP_OUT:-}" ] && reporters+=(--test-reporter=tap --test-reporter-destination="$TAP_OUT")
t=$(now)
node --test --test-concurrency=1 "${reporters[@]}" "${files[@]}"
rc=$?
t_suite=$(secs "$t")
say "engine $t_engine, base image $t_base, product image $t_image, suite $t_suite (exit $rc)"
exit $rc
