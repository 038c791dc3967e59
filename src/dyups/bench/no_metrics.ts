/** @noSelfInFile */
// A benchmark entry point, not for production: the dynamic path with per-request metrics counting switched
// off for the request (balancer_by_lua and log_by_lua), so scripts/bench-metrics.mjs can compare it with the
// normal path in the same nginx, the same workers and the same backends, round after round.
import { balance as normalBalance, logPhase } from "../phases/balancer";
import { counting, setCounting } from "../metrics/counters";

export function balance(): void {
    const on = counting();
    setCounting(false);
    normalBalance();
    setCounting(on);
}

export function log(): void {
    const on = counting();
    setCounting(false);
    logPhase();
    setCounting(on);
}
