/** @noSelfInFile */
// Cross-worker peer state in the dict, keyed by peer address (so it survives upstream changes): passive
// health (nginx's max_fails / fail_timeout) and active request counts (least_conn, max_conns), with the
// per-worker cache that keeps them to one shm read per request. Keys are created with safe_add/safe_set, never
// with incr's init value or set (both evict other keys, configuration included, from a full dict): in a full
// dict a count that cannot be created is not kept, and routing goes on. Keys: f:<peer>, d:<peer>, hg, k:<peer>
// (store/keys.ts). Phases: balancer and log (shm get/incr/set only: no locks, no yields), and any phase
// that builds a version (peerKeys).
//
// nginx semantics kept: a peer with max_fails > 0 that failed max_fails times within fail_timeout is not
// picked for fail_timeout; after that one request may try it; failing again marks it down at once (the
// failure count outlives the down mark), and a success clears the count.
// Accepted race: two workers may both count the failure that crosses max_fails; the mark is set twice.
//
// Per-worker cache: down marks and "has a failure count" are cached per key and dropped whenever the health
// generation (hg, bumped after every failure's writes) moves. A request reads that one key (healthSync)
// instead of one key per candidate peer plus one at its end: in the steady state (no failures) passive
// health costs one shm get per request, whatever the number of peers. A down mark is cached with its end
// time, so its expiry needs no shm read either.
import type { PeerSet, PeerState } from "../balance/types";
import { noteFailure } from "../balance/peer_set";
import { dict } from "./dict";
import { CONNS_PREFIX, DOWN_PREFIX, FAILS_PREFIX, HEALTH_GEN } from "./keys";

/** A peer set plus the shm keys of each peer (precomputed at build: the hot path builds no strings). */
export interface Peers extends PeerSet {
    /** d:<id>, f:<id>, k:<id> per gi */
    dkeys: string[];
    fkeys: string[];
    kkeys: string[];
    /** any peer with max_fails > 0 (passive health accounting on) */
    anyMaxFails: boolean;
    /** count active requests per peer (least_conn, random two, max_conns) */
    trackConns: boolean;
}

/** Turns a built peer set into Peers: its keys, and whether it needs passive health and connection counts. */
export function attachPeerKeys(set: PeerSet, countConns: boolean): Peers {
    const peers = set as Peers;
    peers.dkeys = [];
    peers.fkeys = [];
    peers.kkeys = [];
    let anyMaxFails = false;
    let anyMaxConns = false;
    for (let gi = 1; gi <= set.total; gi++) {
        const id = set.ids[gi - 1];
        peers.dkeys[gi - 1] = DOWN_PREFIX + id;
        peers.fkeys[gi - 1] = FAILS_PREFIX + id;
        peers.kkeys[gi - 1] = CONNS_PREFIX + id;
        if (set.maxFails[gi - 1] > 0) anyMaxFails = true;
        if (set.maxConns[gi - 1] > 0) anyMaxConns = true;
    }
    peers.anyMaxFails = anyMaxFails;
    peers.trackConns = anyMaxConns || countConns;
    return peers;
}

let shared: NgxSharedDict | undefined;
/** the health generation the caches below belong to */
let seenGen = -1;
/** d:<peer> -> the end of its down mark (0: not marked) */
let downUntil: LuaTable<string, number> = new LuaTable();
/** f:<peer> -> whether it has a failure count */
let failing: LuaTable<string, boolean> = new LuaTable();
const now = ngx.now;

function d(): NgxSharedDict {
    if (shared === undefined) shared = dict();
    return shared;
}

function flush(gen: number): void {
    seenGen = gen;
    downUntil = new LuaTable();
    failing = new LuaTable();
}

/** Drops this worker's cached peer health if another worker recorded a failure since. One shm get. */
function healthSync(): void {
    const [g] = (shared ?? d()).get(HEALTH_GEN);
    const gen = (g as number | undefined) ?? 0;
    if (gen !== seenGen) flush(gen);
}

function available(set: PeerSet, gi: number): boolean {
    const peers = set as Peers;
    // like nginx, a lone server is never taken out for failures (there is nothing else to try)
    if (!set.single && set.maxFails[gi - 1] > 0) {
        const dkey = peers.dkeys[gi - 1];
        let until = downUntil.get(dkey);
        if (until === undefined) {
            const [v] = (shared ?? d()).get(dkey);
            // a mark written by an older release holds `true`: look again in a second
            until = v === undefined ? 0 : type(v) === "number" ? (v as number) : now() + 1;
            downUntil.set(dkey, until);
        }
        if (until > 0 && now() < until) return false;
    }
    const mc = set.maxConns[gi - 1];
    if (mc > 0) {
        const [c] = (shared ?? d()).get(peers.kkeys[gi - 1]);
        if (c !== undefined && (c as number) >= mc) return false;
    }
    return true;
}

function conns(set: PeerSet, gi: number): number {
    const [c] = (shared ?? d()).get((set as Peers).kkeys[gi - 1]);
    return (c as number | undefined) ?? 0;
}

/** The PeerState the balancer picks with. */
const peerState: PeerState = { available, conns };

/**
 * Adds one to the counter KEY, creating it (TTL ttl, 0: none) with safe_add: incr with an init value would
 * evict other keys (configuration included) from a full dict to make room. Undefined when it cannot be
 * created (the dict is full: this count is not kept).
 */
function count(sd: NgxSharedDict, key: string, ttl: number): number | undefined {
    const [n] = sd.incr(key, 1);
    if (n !== undefined) return n;
    const [ok] = sd.safe_add(key, 1, ttl);
    if (ok) return 1;
    const [again] = sd.incr(key, 1); // added by another worker meanwhile
    return again;
}

/** A try on peer gi failed (connect error, timeout, or a proxy_next_upstream condition). */
function reportFailure(set: Peers, gi: number): void {
    const maxFails = set.maxFails[gi - 1];
    if (maxFails <= 0 || set.single) return;
    noteFailure(set, gi); // this worker's smooth WRR lowers the peer's effective weight, as nginx does
    const ft = set.failTimeouts[gi - 1];
    const sd = shared ?? d();
    const fkey = set.fkeys[gi - 1];
    const n = count(sd, fkey, ft);
    if (n !== undefined && n >= maxFails) {
        sd.safe_set(set.dkeys[gi - 1], now() + ft, ft);
        // keep the count past the down mark, so one more failure after fail_timeout marks it down again
        sd.expire(fkey, ft * 2);
        ngx.log(ngx.WARN, "dyups: upstream server temporarily disabled: ", set.ids[gi - 1],
            " (", n, " failures within ", ft, "s)");
    }
    // after the writes: a worker that sees the new generation reads them
    const gen = count(sd, HEALTH_GEN, 0);
    flush(gen ?? -1);
}

/** A try on peer gi succeeded: clear its failure count (no shm access when the cache says there is none). */
function reportSuccess(set: Peers, gi: number): void {
    if (set.maxFails[gi - 1] <= 0) return;
    const fkey = set.fkeys[gi - 1];
    let f = failing.get(fkey);
    const sd = shared ?? d();
    if (f === undefined) {
        const [n] = sd.get(fkey);
        f = n !== undefined;
    }
    if (f) sd.delete(fkey);
    failing.set(fkey, false);
}

function connOpen(set: Peers, gi: number): void {
    count(shared ?? d(), set.kkeys[gi - 1], 0);
}

function connClose(set: Peers, gi: number): void {
    const sd = shared ?? d();
    const key = set.kkeys[gi - 1];
    const [n] = sd.incr(key, -1);
    if (n !== undefined && n <= 0) sd.delete(key);
}

export { peerState, healthSync, reportFailure, reportSuccess, connOpen, connClose };
