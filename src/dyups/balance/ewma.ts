/** @noSelfInFile */
// `balancer ewma [half_life=10s] [penalty=1s];`: latency-aware balancing. Per server entry of a version, a
// peak-EWMA of the response times of its tries; a pick draws two distinct usable peers of the tier at random
// and takes the one with the lower cost (power of two choices):
//
//   cost(gi) = (score(gi) + TICK) * (pending(gi) + 1) / weight(gi)
//
//   score    on each outcome at time t, Δt after the previous one, w = 2^(-Δt / half_life):
//              score = rtt                          when rtt is above the current score (peak: a slowdown counts at once)
//              score = score·w + rtt·(1 - w)        otherwise (an EWMA in time: a recovery counts over half-lives)
//            a failed try counts as rtt = max(its time, penalty). Between outcomes the score, as picks see it,
//            decays toward 0 with the same half-life, so a server that gets no traffic is tried again.
//   pending  tries this worker sent to the peer whose outcome is not in yet (active requests).
//   TICK     the clock's resolution (1 ms): an untried peer (score 0) costs its pending count, so a new or
//            unknown server gets a bounded share until its first response tells its latency.
// Tiers as nginx's round robin (swrr.ts tiered): primaries, then backups when none is usable. A tier where two
// usable peers are not found in DRAWS draws (mostly unusable peers, or one peer) is scanned for the lowest cost.
//
// STATE is per worker and per version, in the arrays of set.data (EwmaData): picks and outcomes touch no shared
// memory. Scores outlive a version and a worker only through store/ewma.ts, which publishes them from the timer
// and seeds a new version's scores from them (registry/build.ts): see there for what is shared and why.
// Pure (no ngx.*; the time comes from PeerState.now), hot: pick and outcome allocate nothing. O(1) per pick
// (two candidates) but for the scan fallback, O(tier).
import { parseTime } from "../parse/upstream";
import { tiered } from "./swrr";
import type { PeerSet, PeerState, Picker, Tried } from "./types";
import { usable } from "./walk";

const exp = math.exp;
const random = math.random;
const LN2 = math.log(2);

/** the cost's floor, in seconds: the resolution of nginx's cached clock */
const TICK = 0.001;
/** random draws for two distinct usable candidates before a tier is scanned */
const DRAWS = 8;
export const DEFAULT_HALF_LIFE = 10;
export const DEFAULT_PENALTY = 1;
/** bounds of the arguments, in seconds */
const MAX_HALF_LIFE = 3600;
const MAX_PENALTY = 3600;

export interface EwmaConfig {
    /** seconds */
    halfLife: number;
    /** seconds: the response time a failed try counts as, at least */
    penalty: number;
}

/** The per-version state (set.data). Per-gi arrays, Lua index gi. */
export interface EwmaData {
    /** ln 2 / half-life: the decay per second */
    rate: number;
    halfLife: number;
    penalty: number;
    /** seconds: the score at stamp[gi] (0: no outcome yet) */
    score: number[];
    /** the time of the last outcome (or of the seed) */
    stamp: number[];
    /** tries picked in this worker whose outcome is not in yet */
    pending: number[];
    /** store/ewma.ts: when this worker last published gi's score (0: never) */
    published: number[];
}

/** The score of gi as seen at `now`: decayed toward 0 since its last outcome. */
function scoreAt(d: EwmaData, gi: number, now: number): number {
    const s = d.score[gi - 1];
    if (s <= 0) return 0;
    const dt = now - d.stamp[gi - 1];
    return dt > 0 ? s * exp(-dt * d.rate) : s;
}

function cost(set: PeerSet, d: EwmaData, gi: number, now: number): number {
    return (scoreAt(d, gi, now) + TICK) * (d.pending[gi - 1] + 1) / set.weights[gi - 1];
}

/** The usable peer of first..last with the lowest cost (the first one on ties), or 0. O(last - first). */
function cheapest(set: PeerSet, state: PeerState, tried: Tried, first: number, last: number): number {
    const d = set.data as EwmaData;
    const now = state.now();
    let best = 0;
    let bestCost = 0;
    for (const gi of $range(first, last)) {
        if (usable(set, state, tried, gi)) {
            const c = cost(set, d, gi, now);
            if (best === 0 || c < bestCost) {
                best = gi;
                bestCost = c;
            }
        }
    }
    return best;
}

/** Power of two choices over first..last: the cheaper of two distinct usable peers drawn at random. */
function ewmaRange(set: PeerSet, state: PeerState, tried: Tried, first: number, last: number): number {
    if (last - first < 1) return cheapest(set, state, tried, first, last);
    let a = 0;
    let b = 0;
    for (let t = 1; t <= DRAWS; t++) {
        if (a === 0) {
            const gi = random(first, last);
            if (usable(set, state, tried, gi)) a = gi;
        } else {
            // one of the other peers, uniformly: distinct from a by construction
            let gi = random(first, last - 1);
            if (gi >= a) gi = gi + 1;
            if (usable(set, state, tried, gi)) {
                b = gi;
                break;
            }
        }
    }
    if (b === 0) return cheapest(set, state, tried, first, last);
    const d = set.data as EwmaData;
    const now = state.now();
    // a was drawn first, at random: it wins ties, so ties are broken at random
    return cost(set, d, b, now) < cost(set, d, a, now) ? b : a;
}

/** pick: the tiers, then the chosen peer's pending count goes up until its outcome. */
function ewmaPick(set: PeerSet, state: PeerState, tried: Tried, _key: string | undefined): number {
    const gi = tiered(ewmaRange, set, state, tried);
    if (gi > 0) {
        const pending = (set.data as EwmaData).pending;
        pending[gi - 1] = pending[gi - 1] + 1;
    }
    return gi;
}

/** outcome: the pending count goes down; the try's time (a failure: at least the penalty) updates the score. */
function ewmaOutcome(set: PeerSet, state: PeerState, gi: number, ok: boolean, elapsed: number): void {
    const d = set.data as EwmaData;
    const p = d.pending[gi - 1];
    if (p > 0) d.pending[gi - 1] = p - 1;
    let rtt = elapsed > 0 ? elapsed : 0;
    if (!ok && rtt < d.penalty) rtt = d.penalty;
    const now = state.now();
    const dt = now - d.stamp[gi - 1];
    const w = dt > 0 ? exp(-dt * d.rate) : 1;
    const current = d.score[gi - 1] * w;
    d.score[gi - 1] = rtt > current ? rtt : current + rtt * (1 - w);
    d.stamp[gi - 1] = now;
}

// ---------------------------------------------------------------------------------------------------
// Apply and build time

function seconds(name: string, v: string, max: number, zero: boolean): LuaMultiReturn<[number, undefined] | [undefined, string]> {
    const ms = parseTime(v, true);
    if (ms === undefined || ms / 1000 > max || (ms === 0 && !zero)) return $multi(undefined, `invalid ${name} "${v}"`);
    return $multi(ms / 1000, undefined);
}

/** half_life=TIME (> 0, default 10s), penalty=TIME (default 1s); nginx's time syntax ("500ms", "1m30s"). */
function ewmaValidate(args: LuaTable<string, string>): LuaMultiReturn<[unknown, undefined] | [undefined, string]> {
    const config: EwmaConfig = { halfLife: DEFAULT_HALF_LIFE, penalty: DEFAULT_PENALTY };
    for (const [k, v] of pairs(args)) {
        if (k === "half_life") {
            const [s, err] = seconds(k, v, MAX_HALF_LIFE, false);
            if (s === undefined) return $multi(undefined, err);
            config.halfLife = s;
        } else if (k === "penalty") {
            const [s, err] = seconds(k, v, MAX_PENALTY, true);
            if (s === undefined) return $multi(undefined, err);
            config.penalty = s;
        } else {
            return $multi(undefined, `unknown parameter "${k}" (ewma takes half_life= and penalty=)`);
        }
    }
    return $multi(config, undefined);
}

function ewmaBuild(set: PeerSet, config: unknown, _servers: string[]): unknown {
    const c = config as EwmaConfig;
    const d: EwmaData = {
        rate: LN2 / c.halfLife, halfLife: c.halfLife, penalty: c.penalty,
        score: [], stamp: [], pending: [], published: [],
    };
    for (const gi of $range(1, set.total)) {
        d.score[gi - 1] = 0;
        d.stamp[gi - 1] = 0;
        d.pending[gi - 1] = 0;
        d.published[gi - 1] = 0;
    }
    return d;
}

/** The built-in latency-aware picker: `balancer ewma;` (the name is part of the integration contract). */
const EWMA: Picker = { name: "ewma", validate: ewmaValidate, build: ewmaBuild, pick: ewmaPick, outcome: ewmaOutcome };

export { EWMA, ewmaPick, ewmaOutcome, ewmaRange, cheapest, scoreAt, cost, TICK };
