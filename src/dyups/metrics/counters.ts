/** @noSelfInFile */
// Per-worker traffic counters: what every request adds to the metrics, counted in this worker's Lua heap
// only (no shared memory on the request path), and published to the metrics dict by the timer
// (metrics/publish.ts), the approach of nginx-lua-prometheus. Owns the slots below; touches no shm.
//
// Phases: countTry and countRetry run in balancer_by_lua, observe in log_by_lua (phases/balancer.ts calls
// each once per try / per request; observe also when a stale request slot is released, with known = false). HOT PATH: in the steady state they allocate nothing, build no strings
// and call no lualib helper (spec/phases/hot_path_spec.lua checks the compiled Lua): a few table reads and
// additions, a bucket search over 12 bounds, and ngx.now() and ngx.status (FFI). Only a failed try reads
// nginx variables ($upstream_header_time, $upstream_connect_time), to tell a connect failure from a read
// failure.
//
// Slots: one per upstream name and one per (upstream name, peer address) in this worker, shared by every
// version of that upstream (a replace keeps counting into the same series). A version gets its slots on
// its first try (attach: the allocation happens then, once per version and worker); two server entries
// with the same address share one slot (one series). A slot holds deltas since its last publication; the
// first change after a publication puts it on the dirty list, which the publisher walks (only changed
// slots cost anything). A slot whose upstream or peer is gone is marked dead: requests still in flight on
// an old version may add to it, the publisher drops that.
//
// Costs: ~20 numbers per upstream slot and ~9 per peer slot, per worker that routed to it.
import type { UpstreamVersion } from "../registry/build";
import { slotPrefix } from "../store/metrics";

/**
 * Counter indices of an upstream slot (1-based: the slot's `c` is a Lua array). The publisher adds a slot's
 * deltas in index order, which metrics/read.ts relies on: a total (U_REQ, P_DONE) before its parts.
 */
const U_REQ = 1;
const U_RETRY = 2;
/** U_CLASS + k: responses of class k (1..5: 1xx..5xx) as the client got them */
const U_CLASS = 2;
const U_SUM = 8;
/** U_BUCKET + b: response time observations in bucket b (1..BUCKETS; BUCKETS is +Inf), not cumulative */
const U_BUCKET = 8;
const BUCKETS = 12;
const U_N = U_BUCKET + BUCKETS;

/** Counter indices of a peer slot. */
const P_TRY = 1;
const P_DONE = 2;
/** P_CLASS + k: the peer's responses of class k (1..5) */
const P_CLASS = 2;
const P_FAIL_CONNECT = 8;
const P_FAIL_READ = 9;
const P_N = 9;

/** Upper bounds (seconds, `le`) of the response-time buckets 1..BUCKETS-1; bucket BUCKETS is +Inf. */
const BOUNDS: number[] = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10];

export interface Slot {
    /** deltas since the last publication, indices 1..n */
    c: LuaTable<number, number>;
    n: number;
    /** on the dirty list */
    dirty: boolean;
    /** its upstream or peer is gone: the publisher drops its deltas */
    dead: boolean;
    /** shm key prefix of its counters (store/metrics.ts): counter i is prefix .. i */
    prefix: string;
}

export interface UpstreamSlot extends Slot {
    name: string;
    /** peer address -> its slot */
    peers: LuaTable<string, Slot>;
}

/** What a version carries (UpstreamVersion.mc): its upstream slot and the slot of each peer gi. */
export interface VersionCounters {
    up: UpstreamSlot;
    peers: Slot[];
}

let enabled = false;
/** name -> upstream slot (live ones) */
const upstreams: LuaTable<string, UpstreamSlot> = new LuaTable();
/** Two dirty lists: requests push to `dirty` while the publisher walks the other one. */
let dirty: LuaTable<number, Slot> = new LuaTable();
let dirtyN = 0;
let spare: LuaTable<number, Slot> = new LuaTable();

const now = ngx.now;
const match = string.match;

function newSlot(n: number, prefix: string): Slot {
    const c: LuaTable<number, number> = new LuaTable();
    for (let i = 1; i <= n; i++) c.set(i, 0);
    return { c, n, dirty: false, dead: false, prefix };
}

/** The upstream slot of NAME in this worker (created on first use). */
export function upstreamSlot(name: string): UpstreamSlot {
    let u = upstreams.get(name);
    if (u === undefined) {
        const s = newSlot(U_N, slotPrefix(name, "")) as UpstreamSlot;
        s.name = name;
        s.peers = new LuaTable();
        upstreams.set(name, s);
        u = s;
    }
    return u;
}

/** Gives a version its slots (first try of a version in this worker). O(peers). */
function attach(ver: UpstreamVersion): VersionCounters {
    const up = upstreamSlot(ver.name);
    const ids = ver.peers.ids;
    const peers: Slot[] = [];
    for (let gi = 1; gi <= ver.peers.total; gi++) {
        const id = ids[gi - 1];
        let p = up.peers.get(id);
        if (p === undefined) {
            p = newSlot(P_N, slotPrefix(ver.name, id));
            up.peers.set(id, p);
        }
        peers[gi - 1] = p;
    }
    const vc: VersionCounters = { up, peers };
    ver.mc = vc;
    return vc;
}

function mark(s: Slot): void {
    s.dirty = true;
    dirtyN = dirtyN + 1;
    dirty.set(dirtyN, s);
}

/** balancer_by_lua: a try goes to peer gi (retry: not the request's first try). */
function countTry(ver: UpstreamVersion, gi: number, retry: boolean): void {
    if (!enabled) return;
    const vc = ver.mc ?? attach(ver);
    const p = vc.peers[gi - 1];
    const c = p.c;
    c.set(P_TRY, c.get(P_TRY) + 1);
    if (!p.dirty) mark(p);
    if (retry) {
        const u = vc.up;
        u.c.set(U_RETRY, u.c.get(U_RETRY) + 1);
        if (!u.dirty) mark(u);
    }
}

/** The class index 1..5 of an HTTP status, or 0 for anything else (no response: 0, 499 is 4). */
function classOf(status: number): number {
    if (status >= 600 || status < 100) return 0;
    if (status >= 500) return 5;
    if (status >= 400) return 4;
    if (status >= 300) return 3;
    if (status >= 200) return 2;
    return 1;
}

/** The last entry of an $upstream_*_time list ("0.001, - : 0.002"), ignoring a trailing separator. */
function lastEntry(list: string | undefined): string | undefined {
    if (list === undefined) return undefined;
    const [last] = match(list, "([^,:%s]+)[,:%s]*$");
    return last;
}

/** A failed try (no response header): connect (no connection was made) or read. Failure path only. */
function countFailure(p: Slot): void {
    const c = p.c;
    if (lastEntry(ngx.var.upstream_connect_time) === "-") c.set(P_FAIL_CONNECT, c.get(P_FAIL_CONNECT) + 1);
    else c.set(P_FAIL_READ, c.get(P_FAIL_READ) + 1);
}

/**
 * balancer_by_lua, retry: the previous try on peer prev ended as get_last_failure() says: "failed" (a connect
 * or read failure, or a response with a proxy_next_upstream status such as http_500) or "next" (http_403,
 * http_404), with the status nginx recorded for it (`code`: 502 error, 504 timeout, or the peer's status).
 */
function countRetry(ver: UpstreamVersion, prev: number, state: string | undefined, code: number | undefined): void {
    if (!enabled) return;
    const vc = ver.mc ?? attach(ver);
    const p = vc.peers[prev - 1];
    const c = p.c;
    c.set(P_DONE, c.get(P_DONE) + 1);
    const k = code !== undefined ? classOf(code) : 0;
    // nginx gives 502 (error) or 504 (timeout) to a try that got no response header; a peer's own 502/504
    // (proxy_next_upstream http_502) came with one
    if (state === "failed" && (k === 0 || code === 502 || code === 504) && lastEntry(ngx.var.upstream_header_time) === "-") {
        countFailure(p);
    } else if (k > 0) c.set(P_CLASS + k, c.get(P_CLASS + k) + 1);
    if (!p.dirty) mark(p);
}

/**
 * log_by_lua: the request ends. gi: the peer of its last try (0: none was available); t0: ngx.now() of
 * its first try. Counts the request and the client's status class for the upstream, the last try's outcome
 * for the peer, and the time since the first try. known = false: a request whose log phase never ran (its
 * per-request state is released later, as stale): only its last try is closed (nothing else is known).
 */
function observe(ver: UpstreamVersion, gi: number, t0: number, known: boolean): void {
    if (!enabled) return;
    const vc = ver.mc ?? attach(ver);
    if (!known) {
        if (gi > 0) {
            const sp = vc.peers[gi - 1];
            sp.c.set(P_DONE, sp.c.get(P_DONE) + 1);
            if (!sp.dirty) mark(sp);
        }
        return;
    }
    const status = ngx.status;
    const k = classOf(status);
    const u = vc.up;
    const uc = u.c;
    uc.set(U_REQ, uc.get(U_REQ) + 1);
    if (k > 0) uc.set(U_CLASS + k, uc.get(U_CLASS + k) + 1);
    if (gi > 0) {
        const p = vc.peers[gi - 1];
        const c = p.c;
        c.set(P_DONE, c.get(P_DONE) + 1);
        // 502/504 without a response header from the peer: the try failed (nginx made the status)
        if ((status === 502 || status === 504) && lastEntry(ngx.var.upstream_header_time) === "-") countFailure(p);
        else if (k > 0) c.set(P_CLASS + k, c.get(P_CLASS + k) + 1);
        if (!p.dirty) mark(p);
        const dt = now() - t0;
        let b = 1;
        while (b < BUCKETS && dt > BOUNDS[b - 1]) b = b + 1;
        uc.set(U_BUCKET + b, uc.get(U_BUCKET + b) + 1);
        uc.set(U_SUM, uc.get(U_SUM) + dt);
    }
    if (!u.dirty) mark(u);
}

// ---------------------------------------------------------------- for the publisher (timer), not per request

/** Turns counting on or off for this worker (init_worker: the `metrics` option and the metrics dict). */
export function setCounting(on: boolean): void {
    enabled = on;
}

export function counting(): boolean {
    return enabled;
}

/**
 * Hands the dirty list to the publisher and starts a fresh one: [list, count]. The publisher clears each
 * slot's dirty flag as it publishes it, then gives the list back with recycle().
 */
export function takeDirty(): LuaMultiReturn<[LuaTable<number, Slot>, number]> {
    const list = dirty;
    const n = dirtyN;
    dirty = spare;
    dirtyN = 0;
    spare = list;
    return $multi(list, n);
}

/** How many slots changed since the last publication. */
export function dirtyCount(): number {
    return dirtyN;
}

/** The list from takeDirty, published: emptied for reuse (keeps its array part: no allocation next time). */
export function recycle(list: LuaTable<number, Slot>, n: number): void {
    for (let i = 1; i <= n; i++) list.delete(i);
}

/** Every live upstream slot of this worker (the publisher's clean-up walks it). */
export function eachUpstream(): LuaPairsIterable<string, UpstreamSlot> {
    return upstreams;
}

/** NAME's live upstream slot in this worker, or undefined. */
export function findUpstream(name: string): UpstreamSlot | undefined {
    return upstreams.get(name);
}

/** Forgets NAME's slot: its upstream is gone. Slots still referenced by old versions are marked dead. */
export function dropUpstream(name: string): UpstreamSlot | undefined {
    const u = upstreams.get(name);
    if (u === undefined) return undefined;
    upstreams.delete(name);
    u.dead = true;
    for (const [, p] of pairs(u.peers)) p.dead = true;
    return u;
}

/** Forgets one peer slot of an upstream slot (the peer left the upstream). */
export function dropPeer(u: UpstreamSlot, id: string): Slot | undefined {
    const p = u.peers.get(id);
    if (p === undefined) return undefined;
    u.peers.delete(id);
    p.dead = true;
    return p;
}

export { countTry, countRetry, observe };
export { U_REQ, U_RETRY, U_CLASS, U_SUM, U_BUCKET, BUCKETS, U_N, P_TRY, P_DONE, P_CLASS, P_FAIL_CONNECT, P_FAIL_READ, P_N, BOUNDS };
