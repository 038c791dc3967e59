/** @noSelfInFile */
// random and random two [least_conn] (ngx_http_upstream_get_random_peer, _get_random2_peer): a uniform
// point in the primaries' total weight; `two` draws two distinct usable peers and keeps the one with fewer
// connections per weight (the second wins ties, as nginx). Fewer than two primaries, or 20 unusable draws:
// round robin. Pure, hot: no allocation. The draw budget restarts on each try (nginx counts per request).
import { rrPick } from "./swrr";
import type { PeerSet, PeerState, Picker, Tried } from "./types";
import { HASH_TRIES, primaryAt, usable } from "./walk";

const random = math.random;

function randomPick(set: PeerSet, state: PeerState, tried: Tried): number {
    // nginx 1.22 tests peers->single here, later versions peers->number < 2: the same without backups
    if (set.nPrimary < 2) return rrPick(set, state, tried);
    const totalWeight = set.totalWeight;
    let tries = 0;
    for (;;) {
        const gi = primaryAt(set, random(0, totalWeight - 1));
        if (usable(set, state, tried, gi)) return gi;
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

function random2Pick(set: PeerSet, state: PeerState, tried: Tried): number {
    if (set.nPrimary < 2) return rrPick(set, state, tried);
    const totalWeight = set.totalWeight;
    const weights = set.weights;
    let prev = 0;
    let tries = 0;
    for (;;) {
        const gi = primaryAt(set, random(0, totalWeight - 1));
        if (gi !== prev && usable(set, state, tried, gi)) {
            if (prev !== 0) {
                if (state.conns(set, gi) * weights[prev - 1] > state.conns(set, prev) * weights[gi - 1]) return prev;
                return gi;
            }
            prev = gi;
        }
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

const RANDOM: Picker = { name: "random", pick: randomPick };
const RANDOM_TWO: Picker = { name: "random two", pick: random2Pick };

export { randomPick, random2Pick, RANDOM, RANDOM_TWO };
