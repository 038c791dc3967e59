/** @noSelfInFile */
// least_conn (ngx_http_upstream_get_least_conn_peer): the usable peer with the fewest active connections
// per unit of weight (compared by cross-multiplication, as nginx); several such peers: smooth WRR among
// them. Tiers as round robin. Pure, hot: no allocation.
//
// Difference from nginx: each peer's count is read once per pick and reused for the tie pass (nginx
// re-reads under its lock; here both passes see the same snapshot, and re-reading shared memory would
// double the cost of the pick).
import { MARKED, swrrStep, tiered } from "./swrr";
import type { PeerSet, PeerState, Picker, Tried } from "./types";

function leastConnRange(set: PeerSet, state: PeerState, tried: Tried, first: number, last: number): number {
    const conns = set.balConns;
    const weights = set.weights;
    let many = false;
    let best = 0;
    // the best peer's count and weight: conns/weight is compared by cross-multiplication
    let bestConns = 0;
    let bestWeight = 1;
    for (const gi of $range(first, last)) {
        conns[gi - 1] = -1;
        if (set.down[gi - 1]) continue;
        if (tried !== undefined && tried.get(gi) === true) continue;
        if (!state.available(set, gi)) continue;
        const c = state.conns(set, gi);
        conns[gi - 1] = c;
        const w = weights[gi - 1];
        if (best === 0 || c * bestWeight < bestConns * w) {
            best = gi;
            bestConns = c;
            bestWeight = w;
            many = false;
        } else if (c * bestWeight === bestConns * w) {
            many = true;
        }
    }
    if (best === 0 || !many) return best;
    // the tie pass: keep only the peers at the least weighted count marked, then one smooth WRR step
    for (const gi of $range(best, last)) {
        const c = conns[gi - 1];
        if (c >= 0 && c * bestWeight !== bestConns * weights[gi - 1]) conns[gi - 1] = -1;
    }
    return swrrStep(set, state, tried, best, last, undefined, MARKED);
}

function leastConnPick(set: PeerSet, state: PeerState, tried: Tried): number {
    return tiered(leastConnRange, set, state, tried);
}

const LEAST_CONN: Picker = { name: "least_conn", pick: leastConnPick };

export { leastConnPick, LEAST_CONN };
