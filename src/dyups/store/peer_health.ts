/** @noSelfInFile */
// Cross-worker peer state in the dict, per server entry of an upstream: passive health (nginx's max_fails /
// fail_timeout) and active request counts (least_conn, random two, max_conns), with the per-worker cache that
// keeps them to one shm read per request. Keys: f:, fa:, fc:, k: per entry, and hg (store/keys.ts). Phases:
// balancer and log (shm get/incr/set only: no locks, no yields), and any phase that builds a version.
//
// A SERVER ENTRY is one peer of one upstream: "<upstream>/<address>#<n>", n counting the peers of that
// upstream with the same address (gi order). So two upstreams listing A, or one listing A twice, have
// separate state, as in nginx; an update of the same upstream that keeps A keeps A's state (nginx would
// start afresh at a reload; we keep it across run-time updates, which is why it is not per version).
// State shared across workers is nginx's with a `zone` (its per-worker state without one is not kept).
//
// nginx's rules (ngx_http_upstream_round_robin.c), per entry: fails, accessed (time of the last failure),
// checked (time of the last failure, or of a pick made more than fail_timeout after `checked`):
//   - a failure: fails + 1, accessed = checked = now (and the effective weight drops, per worker);
//   - not picked while fails >= max_fails and now - checked <= fail_timeout;
//   - a pick more than fail_timeout after `checked` sets checked = now (so after fail_timeout one request
//     tries a failed server, and the others wait for its outcome);
//   - a success resets fails to 0 only if accessed < checked: a success right after a failure does not.
// Races accepted: two workers may both count the failure that crosses max_fails (logged twice), and two
// workers may both pick a failed server when its fail_timeout ends (one probe request per worker at most).
//
// Per-worker cache: each entry's fails and checked are read once and dropped whenever the health generation
// (hg, bumped after every failure and every `checked` update) moves. The timer reads that one key every
// sync_interval (healthSync), and a worker's own reports drop its cache at once: requests read no shm key for
// passive health in the steady state. Another worker's failures reach this one within a sync_interval (nginx
// without a `zone` never shares them; with one, at once).
// Lifetime: f:/fa:/fc: expire RETAIN seconds after the entry's last failure or check (state kept across
// updates, not forever); the write pipeline deletes them at once for entries an update or delete removes
// (forgetEntries). k: is deleted when its count falls to 0.
// Keys are created with safe_add/safe_set, never with incr's init value or set (both evict other keys,
// configuration included, from a full dict): in a full dict a count that cannot be created is not kept, and
// routing goes on.
import type { PeerSet, PeerState } from "../balance/types";
import { noteFailure } from "../balance/peer_set";
import { checkedDown, flushCheckCache } from "../health/cache";
import { dict } from "./dict";
import { ACCESSED_PREFIX, CHECKED_PREFIX, CONNS_PREFIX, FAILS_PREFIX, HEALTH_GEN } from "./keys";

/** A peer set plus the shm keys of each server entry (precomputed at build: the hot path builds no strings). */
export interface Peers extends PeerSet {
    /** the server entry of each gi ("<upstream>/<address>#<n>") */
    entries: string[];
    /** f:, fa:, fc:, k: + entry, per gi */
    fkeys: string[];
    akeys: string[];
    ckeys: string[];
    kkeys: string[];
    /** any peer with max_fails > 0 (passive health accounting on) */
    anyMaxFails: boolean;
    /** count active requests per peer (least_conn, random two, max_conns) */
    trackConns: boolean;
    /** active health checks (health/attach.ts): hc:d key per gi ("" for servers marked down), else undefined */
    hcKeys?: string[];
    /** a checked peer whose state is not stored yet is down (the check's default_down) */
    hcDefaultDown?: boolean;
}

/** The server entries of a list of peer addresses (gi order): "<upstream>/<address>#<n>". */
export function entryIds(upstream: string, ids: string[]): string[] {
    const seen: LuaTable<string, number> = new LuaTable();
    const out: string[] = [];
    for (const [i, id] of ipairs(ids)) {
        const n = (seen.get(id) ?? 0) + 1;
        seen.set(id, n);
        out[i - 1] = `${upstream}/${id}#${n}`;
    }
    return out;
}

/**
 * Turns a built peer set of upstream NAME into Peers: its entries and their keys, and whether it needs passive
 * health and connection counts (countConns: the method needs them, whatever max_conns says).
 */
export function attachPeerKeys(set: PeerSet, upstream: string, countConns: boolean): Peers {
    const peers = set as Peers;
    peers.entries = entryIds(upstream, set.ids);
    peers.fkeys = [];
    peers.akeys = [];
    peers.ckeys = [];
    peers.kkeys = [];
    let anyMaxFails = false;
    let anyMaxConns = false;
    for (let gi = 1; gi <= set.total; gi++) {
        const e = peers.entries[gi - 1];
        peers.fkeys[gi - 1] = FAILS_PREFIX + e;
        peers.akeys[gi - 1] = ACCESSED_PREFIX + e;
        peers.ckeys[gi - 1] = CHECKED_PREFIX + e;
        peers.kkeys[gi - 1] = CONNS_PREFIX + e;
        if (set.maxFails[gi - 1] > 0) anyMaxFails = true;
        if (set.maxConns[gi - 1] > 0) anyMaxConns = true;
    }
    peers.anyMaxFails = anyMaxFails && !set.single;
    peers.trackConns = anyMaxConns || countConns;
    return peers;
}

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

/** Deletes the passive-health state of server entries that no longer exist (an update or delete removed them). */
export function forgetEntries(entries: string[]): void {
    const sd = dict();
    let any = false;
    for (const [, e] of ipairs(entries)) {
        if (sd.get(FAILS_PREFIX + e)[0] !== undefined) any = true;
        sd.delete(FAILS_PREFIX + e);
        sd.delete(ACCESSED_PREFIX + e);
        sd.delete(CHECKED_PREFIX + e);
    }
    if (any) count(sd, HEALTH_GEN, 0);
}

/** Seconds the passive state of an entry is kept after its last failure or check. */
const RETAIN = 3600;

let shared: NgxSharedDict | undefined;
/** the health generation the caches below belong to */
let seenGen = -1;
/** f:<entry> -> its failure count (0: none) */
let cFails: LuaTable<string, number> = new LuaTable();
/** f:<entry> -> its `checked` time (entries with failures only) */
let cChecked: LuaTable<string, number> = new LuaTable();
const now = ngx.now;

function d(): NgxSharedDict {
    if (shared === undefined) shared = dict();
    return shared;
}

function flush(gen: number): void {
    seenGen = gen;
    flushCheckCache();
    cFails = new LuaTable();
    cChecked = new LuaTable();
}

/** Drops this worker's cached peer health if another worker recorded a change since. One shm get. */
function healthSync(): void {
    const [g] = (shared ?? d()).get(HEALTH_GEN);
    const gen = (g as number | undefined) ?? 0;
    if (gen !== seenGen) flush(gen);
}

/** Bumps the health generation after a change of f:/fa:/fc: and drops this worker's cache too. */
function published(sd: NgxSharedDict): void {
    const gen = count(sd, HEALTH_GEN, 0);
    flush(gen ?? -1);
}

/** The failure count of entry gi (cached; reads `checked` along with a count > 0). */
function failsOf(peers: Peers, gi: number): number {
    const fkey = peers.fkeys[gi - 1];
    let f = cFails.get(fkey);
    if (f === undefined) {
        const sd = shared ?? d();
        const [v] = sd.get(fkey);
        f = (v as number | undefined) ?? 0;
        cFails.set(fkey, f);
        if (f > 0) {
            const [c] = sd.get(peers.ckeys[gi - 1]);
            cChecked.set(fkey, (c as number | undefined) ?? 0);
        }
    }
    return f;
}

function available(set: PeerSet, gi: number): boolean {
    const peers = set as Peers;
    // active checks (health/cache.ts): also for a lone server, as the check module
    if (peers.hcKeys !== undefined && checkedDown(peers, gi)) return false;
    // like nginx, a lone server is never taken out for failures (there is nothing else to try)
    const maxFails = set.maxFails[gi - 1];
    if (maxFails > 0 && !set.single && failsOf(peers, gi) >= maxFails) {
        if (now() - (cChecked.get(peers.fkeys[gi - 1]) ?? 0) <= set.failTimeouts[gi - 1]) return false;
    }
    const mc = set.maxConns[gi - 1];
    if (mc > 0) {
        const [c] = (shared ?? d()).get(peers.kkeys[gi - 1]);
        if (c !== undefined && (c as number) >= mc) return false;
    }
    return true;
}

/**
 * Peer gi was picked for a try: a pick more than fail_timeout after the entry's `checked` moves it to now
 * (nginx's get_peer), so other requests wait for this one's outcome. Costs nothing for entries without failures.
 */
function picked(peers: Peers, gi: number): void {
    if (peers.maxFails[gi - 1] <= 0 || failsOf(peers, gi) === 0) return;
    const t = now();
    if (t - (cChecked.get(peers.fkeys[gi - 1]) ?? 0) <= peers.failTimeouts[gi - 1]) return;
    const sd = shared ?? d();
    sd.safe_set(peers.ckeys[gi - 1], t, RETAIN + peers.failTimeouts[gi - 1]);
    published(sd);
}

function conns(set: PeerSet, gi: number): number {
    const [c] = (shared ?? d()).get((set as Peers).kkeys[gi - 1]);
    return (c as number | undefined) ?? 0;
}

/** The PeerState the balancer picks with. */
const peerState: PeerState = { available, conns, now };

/** A try on peer gi failed (connect error, timeout, or a proxy_next_upstream condition). */
function reportFailure(set: Peers, gi: number): void {
    const maxFails = set.maxFails[gi - 1];
    if (maxFails <= 0 || set.single) return;
    noteFailure(set, gi); // this worker's smooth WRR lowers the peer's effective weight, as nginx does
    const ft = set.failTimeouts[gi - 1];
    const sd = shared ?? d();
    const t = now();
    const ttl = RETAIN + ft;
    const n = count(sd, set.fkeys[gi - 1], ttl);
    sd.expire(set.fkeys[gi - 1], ttl);
    sd.safe_set(set.akeys[gi - 1], t, ttl);
    sd.safe_set(set.ckeys[gi - 1], t, ttl);
    if (n !== undefined && n >= maxFails) {
        ngx.log(ngx.WARN, "dyups: upstream server temporarily disabled: ", set.ids[gi - 1], " in upstream ",
            set.entries[gi - 1], " (", n, " failures, fail_timeout ", ft, "s)");
    }
    // after the writes: a worker that sees the new generation reads them
    published(sd);
}

/**
 * A try on peer gi succeeded: its failure count is reset when the entry was checked after its last failure
 * (accessed < checked). No shm access when the cache says it has no failures.
 */
function reportSuccess(set: Peers, gi: number): void {
    if (set.maxFails[gi - 1] <= 0 || set.single || failsOf(set, gi) === 0) return;
    const sd = shared ?? d();
    const [a] = sd.get(set.akeys[gi - 1]);
    const checked = cChecked.get(set.fkeys[gi - 1]) ?? 0;
    if (((a as number | undefined) ?? 0) < checked) {
        sd.delete(set.fkeys[gi - 1]);
        sd.delete(set.akeys[gi - 1]);
        sd.delete(set.ckeys[gi - 1]);
        published(sd);
    }
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

/**
 * Requests in flight across workers to the server entries `<upstream>/<id>#1..n` (k: counts, kept for
 * upstreams that count connections: least_conn, random two, max_conns, a drained server). Status views only.
 */
function activeConnections(upstream: string, id: string, n: number): number {
    const sd = shared ?? d();
    let total = 0;
    for (let i = 1; i <= n; i++) {
        const [c] = sd.get(`${CONNS_PREFIX}${upstream}/${id}#${i}`);
        total = total + ((c as number | undefined) ?? 0);
    }
    return total;
}

export { peerState, healthSync, picked, reportFailure, reportSuccess, connOpen, connClose, activeConnections };
