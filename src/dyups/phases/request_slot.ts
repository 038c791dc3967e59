/** @noSelfInFile */
// Per-request state of the balancer and log phases, without ngx.ctx: a slot per request in flight, in a
// per-worker table keyed by the request's address, taken from a pool and given back in the log phase.
// Phases: balancer and log. HOT PATH: allocates nothing in the steady state (slots are reused; a slot is
// created only when more requests are in flight than ever before in this worker), builds no strings.
//
// Why not ngx.ctx: reading ngx.ctx creates a table per request (measured: ~1 800 instructions, plus the GC
// work of the garbage), and the http-level log handler of nginx/dyups.conf runs for every request of the
// nginx, dyups or not. Here a request that never reached the dyups balancer costs the log phase one lookup
// (slotOf: the request's address, one table get: ~10 instructions over an empty log_by_lua).
//
// Lifetime and staleness: the log phase of a main request always runs before nginx frees the request, so its
// slot is gone before the address can be reused. A subrequest (whose log phase nginx never runs), or a
// location whose own log_by_lua forgot require("dyups").log(), leaves its slot behind; the next request at
// the same address finds it: the balancer's first try (get_last_failure() says "no previous try") and the
// log phase (the start time differs) release it as stale: its pinned version and connection count are given
// back, its outcome is not reported (it is unknown). /status shows the slots in use (`inflight`).
import type { UpstreamVersion } from "../registry/build";
import * as base from "resty.core.base";
import * as ffi from "ffi";
import clearTable = require("table.clear");

export interface Slot {
    /** the pinned version (undefined: the slot is free) */
    ver: UpstreamVersion | undefined;
    /** the peer of the current try (0: none) */
    gi: number;
    /** a connection count is open on gi */
    conn: boolean;
    /** peers tried by earlier tries of this request (undefined on a first try) */
    tried: LuaTable<number, boolean> | undefined;
    /** a cleared `tried` table kept for reuse */
    spare: LuaTable<number, boolean> | undefined;
    /** the status an earlier try of this request failed with (a proxy_next_upstream condition), or 0 */
    fstatus: number;
    /** the request's start time: tells a stale slot from this request's own */
    t0: number;
    /** ngx.now() of the request's first try (metrics/counters.ts: response time) */
    tt: number;
}

const get_request = base.get_request;
const cast = ffi.cast;
/** the C type, parsed once: a cast by name parses it at every call wherever the JIT does not compile the caller */
const UINTPTR = ffi.typeof("uintptr_t");

/** free slots */
const pool: LuaTable<number, Slot> = new LuaTable();
let pooled = 0;
let inUse = 0;

/** The current request's address: the key of its slot. */
function requestKey(): number {
    return tonumber(cast(UINTPTR, get_request())) as number;
}

// The table from request addresses to slots is open addressing over two preallocated arrays (linear probing,
// deletion by backward shift): a Lua table keyed by the addresses themselves would see a new key for almost
// every request and rehash (allocating) every few requests as dead keys pile up. Here an insert or a delete
// writes existing array slots only; the arrays double (a rare allocation) when half full.
let capacity = 256;
/** request address per bucket (1..capacity), 0: empty; vals[i] is read only where keys[i] is set */
let keys: number[] = [];
let vals: Slot[] = [];
const floor = math.floor;

function fill(n: number): void {
    keys = [];
    vals = [];
    for (let i = 1; i <= n; i++) keys[i - 1] = 0;
}
fill(capacity);

/** The home bucket (1-based) of an address: addresses are 16-byte aligned, so their low bits carry nothing. */
function home(key: number): number {
    return (floor(key / 16) % capacity) + 1;
}

// JIT: the phase handlers call slotOf/put/remove on every request. A loop in a function they call would
// abort their root traces ("inner loop in root trace") and leave them to the interpreter, so the common case
// (the home bucket settles it) has no loop; the probing loops live in functions called on collisions only.

function probeFree(i: number): number {
    while (keys[i - 1] !== 0) i = (i % capacity) + 1;
    return i;
}

function put(key: number, s: Slot): void {
    let i = home(key);
    if (keys[i - 1] !== 0) i = probeFree((i % capacity) + 1);
    keys[i - 1] = key;
    vals[i - 1] = s;
}

function grow(): void {
    const oldKeys = keys;
    const oldVals = vals;
    const oldCap = capacity;
    capacity = capacity * 2;
    fill(capacity);
    for (let i = 1; i <= oldCap; i++) {
        const k = oldKeys[i - 1];
        if (k !== 0) put(k, oldVals[i - 1]);
    }
}

function probeFind(key: number, i: number): Slot | undefined {
    for (;;) {
        const k = keys[i - 1];
        if (k === key) return vals[i - 1];
        if (k === 0) return undefined;
        i = (i % capacity) + 1;
    }
}

/** The slot of the request at `key`, or undefined. One probe when there is none (the usual case). */
function slotOf(key: number): Slot | undefined {
    const i = home(key);
    const k = keys[i - 1];
    if (k === key) return vals[i - 1];
    if (k === 0) return undefined;
    return probeFind(key, (i % capacity) + 1);
}

function probeKey(key: number, i: number): number {
    while (keys[i - 1] !== key) i = (i % capacity) + 1;
    return i;
}

/** Shifts the entries after bucket i back over it (backward-shift deletion: no tombstones); i is empty after. */
function shiftBack(i: number, j: number): void {
    for (;;) {
        const k = keys[j - 1];
        if (k === 0) break;
        const h = home(k);
        // move k back to i when its home is not in the cyclic range (i, j]
        const between = i <= j ? h > i && h <= j : h > i || h <= j;
        if (!between) {
            keys[i - 1] = k;
            vals[i - 1] = vals[j - 1];
            i = j;
        }
        j = (j % capacity) + 1;
    }
    keys[i - 1] = 0;
}

/** Removes `key` (present). */
function remove(key: number): void {
    let i = home(key);
    if (keys[i - 1] !== key) i = probeKey(key, (i % capacity) + 1);
    const j = (i % capacity) + 1;
    if (keys[j - 1] === 0) keys[i - 1] = 0;
    else shiftBack(i, j);
}

/** A free slot for the request at `key`, registered as in flight. */
function openSlot(key: number, ver: UpstreamVersion, t0: number): Slot {
    let s: Slot;
    if (pooled > 0) {
        s = pool.get(pooled) as Slot;
        pool.delete(pooled);
        pooled = pooled - 1;
    } else {
        s = { ver: undefined, gi: 0, conn: false, tried: undefined, spare: undefined, fstatus: 0, t0: 0, tt: 0 };
    }
    s.ver = ver;
    s.t0 = t0;
    if ((inUse + 1) * 2 > capacity) grow();
    put(key, s);
    inUse = inUse + 1;
    return s;
}

/** The tried set of the slot's request (created on its first retry, reused afterwards). */
function triedOf(s: Slot): LuaTable<number, boolean> {
    let t = s.tried;
    if (t === undefined) {
        t = s.spare ?? new LuaTable();
        s.spare = undefined;
        s.tried = t;
    }
    return t;
}

/** Unregisters the slot at `key` and returns it to the pool (its fields are cleared). */
function closeSlot(key: number, s: Slot): void {
    remove(key);
    inUse = inUse - 1;
    const t = s.tried;
    if (t !== undefined) {
        clearTable(t);
        s.spare = t;
        s.tried = undefined;
    }
    s.ver = undefined;
    s.gi = 0;
    s.conn = false;
    s.fstatus = 0;
    pooled = pooled + 1;
    pool.set(pooled, s);
}

/** Slots in use in this worker (status): 0 when no request is in flight. */
function slotsInUse(): number {
    return inUse;
}

export { requestKey, slotOf, openSlot, triedOf, closeSlot, slotsInUse };
