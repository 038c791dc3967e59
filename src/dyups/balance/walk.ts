/** @noSelfInFile */
// The weighted walk shared by ip_hash, hash and random: nginx's `while (w >= peer->weight)` loop over the
// primaries, done by bisection over their cumulative weights (O(log n)), and the usable-candidate test.
// Pure, hot: no allocation.
import type { PeerSet, PeerState, Tried } from "./types";

/** nginx gives up hashing after this many unusable candidates (`++tries > 20`) and uses round robin. */
export const HASH_TRIES = 20;

/** The primary whose weight range holds w (0 <= w < totalWeight). */
function primaryAt(set: PeerSet, w: number): number {
    const start = set.balStart;
    let lo = 1;
    let hi = set.nPrimary;
    while (lo < hi) {
        const mid = math.floor((lo + hi + 1) / 2);
        if (start[mid - 1] <= w) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

/** Not down, not tried by this request, and available (passive/active health, max_conns). */
function usable(set: PeerSet, state: PeerState, tried: Tried, gi: number): boolean {
    if (set.down[gi - 1]) return false;
    if (tried !== undefined && tried.get(gi) === true) return false;
    return state.available(set, gi);
}

export { primaryAt, usable };
