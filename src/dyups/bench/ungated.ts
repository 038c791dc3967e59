/** @noSelfInFile */
// A benchmark entry point, not for production: balancer_by_lua without the per-request version gate, so
// scripts/bench-sync.mjs can measure what the gate costs. A worker using it routes by a stale state until
// its timer catches up.
import { pickPeer } from "../phases/balancer";

export function balance(): void {
    pickPeer(false);
}
