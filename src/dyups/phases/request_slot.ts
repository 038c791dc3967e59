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
}

const get_request = base.get_request;
const cast = ffi.cast;
const UINTPTR = "uintptr_t";

/** request address -> slot */
const inflight: LuaTable<number, Slot> = new LuaTable();
/** free slots */
const pool: LuaTable<number, Slot> = new LuaTable();
let pooled = 0;
let inUse = 0;

/** The current request's address: the key of its slot. */
function requestKey(): number {
    return tonumber(cast(UINTPTR, get_request())) as number;
}

/** The current request's slot, if the balancer made one. Costs one table get when there is none. */
function slotOf(key: number): Slot | undefined {
    return inflight.get(key);
}

/** A free slot for the request at `key`, registered as in flight. */
function openSlot(key: number, ver: UpstreamVersion, t0: number): Slot {
    let s: Slot;
    if (pooled > 0) {
        s = pool.get(pooled) as Slot;
        pool.delete(pooled);
        pooled = pooled - 1;
    } else {
        s = { ver: undefined, gi: 0, conn: false, tried: undefined, spare: undefined, fstatus: 0, t0: 0 };
    }
    s.ver = ver;
    s.t0 = t0;
    inflight.set(key, s);
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
    inflight.delete(key);
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
