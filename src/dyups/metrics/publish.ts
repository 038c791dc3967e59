/** @noSelfInFile */
// Publishes this worker's counter deltas (metrics/counters.ts) to the metrics dict, and removes the series
// of upstreams and peers that are gone. Runs from the per-worker timer (startup.ts tick): at every tick while
// few slots changed (SMALL: the figures are then fresh within sync_interval at a negligible cost), else once
// per interval (traffic spread over thousands of upstreams): PUBLISH_INTERVAL, stretched up to
// MAX_PUBLISH_INTERVAL so that publishing takes at most DUTY of the worker's time; and once more when the worker
// exits, so counts outlive a reload. Never on the request path.
// Shm: incr per changed counter (safe_add for a new one), delete for gone ones (store/metrics.ts).
// Costs: O(slots changed since the last publication) + O(slots) after a configuration change; it yields
// (ngx.sleep(YIELD)) between chunks so a worker is never held for long, and one publication runs at a time
// (a timer callback that yields can overlap the next tick).
//
// Series removal: each worker deletes the keys of what it counted, once its own registry no longer has
// the upstream (or the upstream no longer lists the peer), and publishes nothing for it after that (the
// slot is dead). Every key a live worker wrote is thus deleted by that worker. Accepted: the keys that a
// worker which died (SIGKILL, crash) wrote for a peer no live worker counts stay until that upstream is
// re-created; they are never shown (the views list only current peers).
import { counting, dirtyCount, dropPeer, dropUpstream, eachUpstream, findUpstream, recycle, Slot, takeDirty, U_N, P_N } from "./counters";
import { addDelta, deleteCounters, metricsDict } from "../store/metrics";
import { appliedVersion, lookup, revision } from "../registry/sync";

/** seconds between publications when many slots changed: the shortest */
export const PUBLISH_INTERVAL = 1;
/** ... and the longest: the interval grows so that publishing takes at most DUTY of the worker's time */
export const MAX_PUBLISH_INTERVAL = 10;
/**
 * The share of a worker's time publications may take. Traffic spread over 10 000 upstreams dirties ~30 000
 * slots a second; publishing them all every second took 15-20 % of each worker (scripts/bench-balancer.mjs b,
 * "spread": 0.79 of one upstream with metrics, 0.93 without). Publishing every `work / DUTY` seconds bounds it.
 */
const DUTY = 0.02;
/** at most this many changed slots are published at every tick */
const SMALL = 64;
/**
 * How a long job yields: ngx.sleep(0) would be the shortest, but nginx without OpenResty's delayed-events
 * patch (Debian's) logs a warning at every such call; 1 ms costs little more.
 */
const YIELD = 0.001;
/** slots published between two yields */
const CHUNK = 256;

let lastPublish = 0;
let busy = false;
/** the current interval between publications when many slots changed */
let interval = PUBLISH_INTERVAL;
/** seconds of work of the running publication, and when its current stretch of work began */
let work = 0;
let workStart = 0;

function startWork(): void {
    ngx.update_time();
    workStart = ngx.now();
}

function endWork(): void {
    ngx.update_time();
    work = work + (ngx.now() - workStart);
}

/** Ends a stretch of work, yields to the event loop, starts the next stretch. */
function pause(): void {
    endWork();
    ngx.sleep(YIELD);
    startWork();
}

/** The interval between publications when many slots changed (seconds). */
export function publishInterval(): number {
    return interval;
}
/** the applied version the last clean-up saw */
let cleanedAt = -1;
/** name -> the revision its peer slots were last checked against */
const checkedRev: LuaTable<string, number> = new LuaTable();

function publishSlot(d: NgxSharedDict, s: Slot): void {
    s.dirty = false;
    const c = s.c;
    const dead = s.dead;
    for (let k = 1; k <= s.n; k++) {
        const v = c.get(k);
        if (v !== 0) {
            c.set(k, 0);
            if (!dead) addDelta(d, s.prefix + k, v);
        }
    }
}

function dropSlot(d: NgxSharedDict, s: Slot, n: number): void {
    deleteCounters(d, s.prefix, n);
}

/** Drops the slots of upstreams this worker no longer has, and of peers their upstream no longer lists. */
function cleanUp(d: NgxSharedDict, yieldable: boolean): void {
    const names: string[] = [];
    for (const [name] of eachUpstream()) names[names.length] = name;
    let done = 0;
    for (const [, name] of ipairs(names)) {
        const rev = revision(name);
        if (rev === undefined) {
            const u = dropUpstream(name);
            checkedRev.delete(name);
            if (u !== undefined) {
                dropSlot(d, u, U_N);
                for (const [, p] of pairs(u.peers)) dropSlot(d, p, P_N);
            }
            done = done + 1;
        } else if (checkedRev.get(name) !== rev) {
            const ver = lookup(name);
            if (ver !== undefined) {
                checkedRev.set(name, rev);
                const ids: LuaTable<string, boolean> = new LuaTable();
                for (let gi = 1; gi <= ver.peers.total; gi++) ids.set(ver.peers.ids[gi - 1], true);
                const slot = findUpstream(name);
                if (slot !== undefined) {
                    const gone: string[] = [];
                    for (const [id] of pairs(slot.peers)) if (ids.get(id) !== true) gone[gone.length] = id;
                    for (const [, id] of ipairs(gone)) {
                        const p = dropPeer(slot, id);
                        if (p !== undefined) dropSlot(d, p, P_N);
                    }
                }
            }
            done = done + 1;
        }
        if (yieldable && done >= CHUNK) {
            done = 0;
            pause();
        }
    }
}

function publish(yieldable: boolean): void {
    const d = metricsDict();
    if (d === undefined) return;
    const [list, n] = takeDirty();
    for (let i = 1; i <= n; i++) {
        publishSlot(d, list.get(i));
        if (yieldable && i % CHUNK === 0) pause();
    }
    recycle(list, n);
    const applied = appliedVersion();
    if (applied !== cleanedAt) {
        cleanedAt = applied;
        cleanUp(d, yieldable);
    }
}

/**
 * The timer's step: publishes when PUBLISH_INTERVAL passed since the last publication, or at once when
 * `final` (the worker is exiting: no yields then). Errors are logged, never raised.
 */
export function publishTick(final: boolean): void {
    if (!counting() || busy) return;
    const t = ngx.now();
    if (!final && t - lastPublish < interval && (dirtyCount() > SMALL || (dirtyCount() === 0 && appliedVersion() === cleanedAt))) return;
    lastPublish = t;
    busy = true;
    work = 0;
    startWork();
    const [ok, err] = pcall(publish, !final);
    endWork();
    busy = false;
    if (!final) interval = math.min(MAX_PUBLISH_INTERVAL, math.max(PUBLISH_INTERVAL, work / DUTY));
    if (!ok) ngx.log(ngx.ERR, "dyups: publishing metrics failed: ", err);
}
