/** @noSelfInFile */
// Smooth weighted round robin (ngx_http_upstream_get_peer), the one step every method that needs it uses:
// round robin over a tier, the backup tier, least_conn's tie pass, consistent hash's server groups, and the
// random start of a new set. Also nginx's tiers (primaries, then backups) and the effective-weight penalty.
// Pure (no ngx.*), hot: no allocation, no closures, no lualib (spec/balance/emitted_spec.lua).
//
// STATE. current/effective weights live in the set: per worker, like nginx without a `zone`. As in nginx,
// once a request has tried a backup its later tries stay in the backup tier (nginx switches rrp->peers to
// the backup list); this is read from `tried`.
import type { PeerSet, PeerState, Picker, Tried } from "./types";

/** A candidate is a usable peer (not down, not tried, available), or (MARKED) one whose balConns >= 0. */
export const USABLE = false;
export const MARKED = true;

/**
 * One smooth WRR step over the candidates from `first` to `last`: consecutive gi when `link` is undefined,
 * else the chain first, link[first], ... (0 ends it). Returns the chosen gi, or 0 when no candidate exists.
 * O(candidates), one state.available call per candidate in USABLE mode.
 */
function swrrStep(set: PeerSet, state: PeerState, tried: Tried, first: number, last: number,
    link: number[] | undefined, marked: boolean): number {
    const down = set.down;
    const weights = set.weights;
    const current = set.balCurrent;
    const effective = set.balEffective;
    const conns = set.balConns;
    let best = 0;
    let bestCurrent = 0;
    let total = 0;
    let gi = first;
    while (gi !== 0 && gi <= last) {
        let candidate: boolean;
        if (marked) {
            candidate = conns[gi - 1] >= 0;
        } else {
            candidate = !down[gi - 1] && !(tried !== undefined && tried.get(gi) === true) && state.available(set, gi);
        }
        if (candidate) {
            const e = effective[gi - 1];
            const c = current[gi - 1] + e;
            current[gi - 1] = c;
            total = total + e;
            if (e < weights[gi - 1]) effective[gi - 1] = e + 1;
            if (best === 0 || c > bestCurrent) {
                best = gi;
                bestCurrent = c;
            }
        }
        gi = link === undefined ? gi + 1 : link[gi - 1];
    }
    if (best !== 0) current[best - 1] = bestCurrent - total;
    return best;
}

// The same step without a loop, for a tier of at most 4 peers (most upstreams). LuaJIT cannot compile a
// loop into the root trace of a phase handler ("inner loop in root trace"): a balancer that reaches one on
// every request runs interpreted up to it, its ngx.var read and FFI calls included. The accumulators are
// module-level so that nothing is allocated.
let vBest = 0;
let vCurrent = 0;
let vTotal = 0;

function visit(set: PeerSet, state: PeerState, tried: Tried, gi: number): void {
    if (set.down[gi - 1]) return;
    if (tried !== undefined && tried.get(gi) === true) return;
    if (!state.available(set, gi)) return;
    const current = set.balCurrent;
    const effective = set.balEffective;
    const e = effective[gi - 1];
    const c = current[gi - 1] + e;
    current[gi - 1] = c;
    vTotal = vTotal + e;
    if (e < set.weights[gi - 1]) effective[gi - 1] = e + 1;
    if (vBest === 0 || c > vCurrent) {
        vBest = gi;
        vCurrent = c;
    }
}

/** swrrStep (USABLE, consecutive) over first..last when that is at most 4 peers; the same picks, no loop. */
function swrrFew(set: PeerSet, state: PeerState, tried: Tried, first: number, last: number): number {
    if (first > last) return 0;
    vBest = 0;
    vCurrent = 0;
    vTotal = 0;
    visit(set, state, tried, first);
    if (first + 1 <= last) {
        visit(set, state, tried, first + 1);
        if (first + 2 <= last) {
            visit(set, state, tried, first + 2);
            if (first + 3 <= last) visit(set, state, tried, first + 3);
        }
    }
    const best = vBest;
    if (best !== 0) set.balCurrent[best - 1] = vCurrent - vTotal;
    return best;
}

/** True when this request already tried a backup: nginx then stays in the backup tier. */
function inBackupTier(set: PeerSet, tried: Tried): boolean {
    if (tried === undefined) return false;
    for (const gi of $range(set.nPrimary + 1, set.total)) {
        if (tried.get(gi) === true) return true;
    }
    return false;
}

/** A picker over the global indexes first..last (one tier). */
export type RangePick = (this: void, set: PeerSet, state: PeerState, tried: Tried, first: number, last: number) => number;

/**
 * nginx's tiers, shared by round robin and least_conn: primaries, then (all unusable) the backup tier; a
 * request that already tried a backup stays there. `range` is a module-level function: nothing is allocated.
 */
function tiered(range: RangePick, set: PeerSet, state: PeerState, tried: Tried): number {
    const nPrimary = set.nPrimary;
    const total = set.total;
    if (nPrimary < total && inBackupTier(set, tried)) return range(set, state, tried, nPrimary + 1, total);
    const gi = range(set, state, tried, 1, nPrimary);
    if (gi !== 0 || nPrimary === total) return gi;
    return range(set, state, tried, nPrimary + 1, total);
}

function swrrRange(set: PeerSet, state: PeerState, tried: Tried, first: number, last: number): number {
    if (last - first < 4) return swrrFew(set, state, tried, first, last);
    return swrrStep(set, state, tried, first, last, undefined, USABLE);
}

/** ngx_http_upstream_get_round_robin_peer; also the fallback of every other method. */
function rrPick(set: PeerSet, state: PeerState, tried: Tried): number {
    return tiered(swrrRange, set, state, tried);
}

/**
 * A try on peer gi failed: lower its effective weight by weight / max_fails (nginx's
 * free_round_robin_peer), so smooth WRR sends it less traffic until picks raise it back. Per worker.
 */
function noteFailure(set: PeerSet, gi: number): void {
    if (set.single) return;
    const maxFails = set.maxFails[gi - 1];
    if (maxFails <= 0) return;
    let e = set.balEffective[gi - 1] - math.floor(set.weights[gi - 1] / maxFails);
    if (e < 0) e = 0;
    set.balEffective[gi - 1] = e;
}

// ---------------------------------------------------------------------------------------------------
// Build time

/** warm-up budget of the random start, in peer visits */
const WARMUP_VISITS = 250000;

function always(_set: PeerSet, _gi: number): boolean {
    return true;
}

function none(_set: PeerSet, _gi: number): number {
    return 0;
}

function zero(): number {
    return 0;
}

/** Every peer available, no connections: the state of a set that has not served yet. */
const EVERY_PEER: PeerState = { available: always, conns: none, now: zero };

/**
 * Advance smooth WRR over the non-down peers first..last by a random number of steps < their Σ weight, so
 * workers do not move in lock-step. Build time: effective weights still equal the weights here.
 */
function randomStart(set: PeerSet, first: number, last: number): void {
    let weight = 0;
    let count = 0;
    for (let gi = first; gi <= last; gi++) {
        if (!set.down[gi - 1]) {
            weight = weight + set.weights[gi - 1];
            count = count + 1;
        }
    }
    if (count < 2) return;
    let steps = math.random(0, weight - 1);
    const cap = math.floor(WARMUP_VISITS / count);
    if (steps > cap) steps = cap;
    for (let s = 1; s <= steps; s++) swrrStep(set, EVERY_PEER, undefined, first, last, undefined, USABLE);
}

/** The picker of nginx's default method (and the fallback of a `balancer` that cannot be used). */
const ROUND_ROBIN: Picker = { name: "round_robin", pick: rrPick };

export { swrrStep, tiered, rrPick, noteFailure, randomStart, ROUND_ROBIN };
