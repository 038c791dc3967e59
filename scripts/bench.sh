#!/usr/bin/env bash
# `make bench`: the benchmarks against a real nginx, then a summary. Prints figures, asserts no timing.
#   scripts/bench-sync.mjs      issue 4: write -> every worker, updates/s, the version gate's cost
#   scripts/bench-balancer.mjs  issue 5: dynamic vs static upstream, 1 vs 10 000 upstreams
#   scripts/bench-health.mjs    issue 15: checks on vs off, the prober with 10 000 peers
#   scripts/bench-cluster.mjs   issue 16: cluster mode on a real etcd (propagation, writes/s, 10 000-upstream load)
#   scripts/bench-metrics.mjs   issue 18: metrics on vs off, GET /metrics with 10 000 upstreams
#   scripts/bench-pickers.mjs   issue 21: balancer ewma (and shared-state ewma, least_conn) vs round robin
#   scripts/bench-cost.mjs      issue 19: the per-request cost against plain nginx (no Lua module), both include forms
#   scripts/bench-instructions.mjs  issue 19: the same paths in CPU instructions per request (valgrind), load-proof
# ~25 minutes on 2 cores; BENCH_QUICK=1 for a ~6 minute version. One benchmark at a time (they share 2 cores).
# Each script stops every nginx and wrk it started, also on error or Ctrl-C.
set -uo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "bench: wrk is not installed (apt-get install wrk)" >&2; exit 1; }
[ -f dist/lua/dyups/init.lua ] || tools/build.sh || exit 1
out=$(mktemp); trap 'rm -f "$out"' EXIT
rc=0
echo "# $(date -u +%Y-%m-%dT%H:%MZ) $(nproc) cores, $(uname -r), load average $(cut -d' ' -f1-3 /proc/loadavg), commit $(git rev-parse --short HEAD 2>/dev/null)$(git diff --quiet HEAD -- src 2>/dev/null || echo ' (src modified)')"
for s in bench-sync bench-balancer bench-health bench-cluster bench-metrics bench-pickers bench-cost bench-instructions; do
  echo "== $s"
  node "scripts/$s.mjs" | tee -a "$out"
  [ "${PIPESTATUS[0]}" -eq 0 ] || { echo "bench: $s failed" >&2; rc=1; }
done
echo
echo "== summary ($(nproc) cores, load average now $(cut -d' ' -f1-3 /proc/loadavg))"
sed -n 's/^SUMMARY //p' "$out"
exit $rc
