/** @noSelfInFile */
// The prober: one worker of the node probes every checked peer. TIMER PHASE ONLY (it yields).
//
// Election: every worker's sync tick (init.ts) calls healthTick(); the worker that claims lease "health"
// (store/lease.ts, TTL LEASE_TTL, renewed every RENEW_EVERY) starts the runner. A holder killed with SIGKILL
// is replaced at the next tick of another worker (the lease module takes a dead pid's lease over at once); a
// holder that stops renewing loses it after LEASE_TTL. A worker that exits (reload, stop) releases it.
//
// The runner derives its targets from the command log (health/targets.ts): one per peer address + check
// configuration, probed once however many upstreams list it; it follows the log version like a worker's
// registry (incrementally, or a full rebuild after compaction and at the start of a tenure). Each target has
// a due time in a min-heap; the loop moves due targets to a queue served by `check_concurrency` light
// threads (bounded concurrency), each running one probe at a time (health/probe.ts). Schedule: the next
// probe is due `interval` after the end of the last one (the module's rule, so a timing-out peer is probed
// every interval + timeout). A new peer is probed at once (the module probes right after a POST); at the
// start of a tenure, peers whose next probe is already overdue are spread over min(interval, 1 s) (jitter),
// the others keep their schedule (their last probe time is in shm). After a new peer's first probe its
// next one is due at a random point of [interval, 1.5 interval), so peers created together spread out.
//
// Results: rise/fall counted as the module (health/state.ts), the state written to hc:s:<id> after every
// probe, hc:d:<id> + the health generation on every up/down change (so every worker's balancer sees it at
// its next request), one log line per change. A peer no upstream lists any more stops being probed at once
// (a probe in flight drops its result); its state is deleted RELEASE_GRACE seconds later unless a version
// lists it again meanwhile (delete + re-create keeps the state, as the module with 2 workers).
// Races accepted: two probers for one lease TTL when a holder stalls (both write the same kind of result).
//
// Shm: lease:health, hc:s:*, hc:d:*, hg, hc:p (figures, about once a second), v and c:*/u:* (read).
import * as semaphore from "ngx.semaphore";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { allNames, changedSince, currentVersion, HAS_CHECK, readRecordWith } from "../store/command_log";
import { deleteState, readState, writeProberStats, writeState } from "../store/health";
import { claim, release, renew } from "../store/lease";
import { heapPop, heapPush, heapTop, newHeap } from "./heap";
import { probeYielding } from "./probe";
import { countProbe, newState } from "./state";
import { applyRecord, namesOf, newTargetSet, Target, TargetSet } from "./targets";

const LEASE = "health";
/** seconds: a holder that stops renewing loses the lease after this */
export const LEASE_TTL = 3;
const RENEW_EVERY = 0.5;
/** seconds a state outlives the last upstream that listed its peer */
const RELEASE_GRACE = 5;
/** the loop's longest sleep (it also follows the log version at this pace) */
const MAX_SLEEP = 0.05;
/** probe start lags kept for the percentiles (about the last LAG_RING probes) */
const LAG_RING = 8192;

interface Tenure {
    ts: TargetSet;
    heap: ReturnType<typeof newHeap>;
    queue: LuaTable<number, Target>;
    qHead: number;
    qTail: number;
    sema: semaphore.Semaphore;
    stop: boolean;
    applied: number;
    /** state ids to delete at the given time unless listed again */
    released: LuaTable<string, number>;
    inflight: number;
    /** threads waiting on the semaphore */
    idle: number;
    started: number;
    probes: number;
    late: number;
    lagMax: number;
    lags: LuaTable<number, number>;
    lagN: number;
    lastProbes: number;
    lastStats: number;
    storeErrors: number;
}

let running = false;
let current: Tenure | undefined;

function now(): number {
    ngx.update_time();
    return ngx.now();
}

/** Every worker's sync tick: start probing here when this worker wins the lease. Never yields. */
export function healthTick(): void {
    if (running || ngx.worker.exiting()) return;
    if (!claim(LEASE, LEASE_TTL)) return;
    running = true;
    const [ok, err] = ngx.timer.at(0, runner);
    if (!ok) {
        running = false;
        release(LEASE);
        ngx.log(ngx.ERR, "dyups: cannot start the health prober: ", err);
    }
}

/** Worker exit: stop probing and give the lease up so another worker takes over at once. */
export function healthRelease(): void {
    if (current !== undefined) current.stop = true;
    release(LEASE);
}

/** The pid probing for the node now, and this worker's tenure figures when it is this worker. */
export function proberRunning(): boolean {
    return running;
}

function schedule(tn: Tenure, t: Target, at: number, initial: boolean): void {
    const st = readState(t.id);
    const interval = t.cfg.interval / 1000;
    if (st !== undefined) {
        t.st = st;
        t.fresh = false;
        const due = st.last > 0 ? st.last + interval : at;
        // overdue at the start of a tenure: spread over min(interval, 1 s); otherwise keep the schedule
        t.due = due > at ? due : initial ? at + math.random() * math.min(interval, 1) : at;
    } else {
        t.st = newState(t.cfg.defaultDown, at);
        t.fresh = true;
        t.due = initial ? at + math.random() * math.min(interval, 1) : at;
    }
    heapPush(tn.heap, t);
}

function applyName(tn: Tenure, name: string, initial: boolean): void {
    // a record without a check wants no probes: as if it did not exist (its old targets, if any, are released)
    const rec: UpstreamRecord | undefined = readRecordWith(name, HAS_CHECK);
    const [added, removed] = applyRecord(tn.ts, name, rec);
    const at = now();
    for (const [, t] of ipairs(added)) {
        tn.released.delete(t.id);
        schedule(tn, t, at, initial);
    }
    for (const [, t] of ipairs(removed)) tn.released.set(t.id, at + RELEASE_GRACE);
}

/** Follows the command log: one shm get when nothing changed. */
function syncTargets(tn: Tenure, initial: boolean): void {
    const v = currentVersion();
    const target = (v as number | undefined) ?? 0;
    if (target === tn.applied) return;
    const names = !initial && target > tn.applied ? changedSince(tn.applied, target) : undefined;
    if (names === undefined) {
        const seen: LuaTable<string, boolean> = new LuaTable();
        for (const [, name] of ipairs(allNames())) {
            seen.set(name, true);
            applyName(tn, name, initial);
        }
        const gone: string[] = [];
        for (const [name] of pairs(tn.ts.byName)) if (seen.get(name) !== true) gone[gone.length] = name;
        for (const [, name] of ipairs(gone)) applyName(tn, name, false);
    } else {
        const done: LuaTable<string, boolean> = new LuaTable();
        for (const [, name] of ipairs(names)) {
            if (done.get(name) !== true) {
                done.set(name, true);
                applyName(tn, name, false);
            }
        }
    }
    tn.applied = target;
}

function record(tn: Tenure, t: Target, alive: boolean, reason: string): void {
    const at = ngx.now();
    const st = t.st ?? newState(t.cfg.defaultDown, at);
    t.st = st;
    const change = countProbe(st, alive, reason, t.cfg.rise, t.cfg.fall, at);
    // hc:d's TTL is renewed about every 30 s (its value changes only with a transition)
    const refresh = at - t.dWritten > 30;
    const [ok, err] = writeState(t.id, st, change !== undefined || t.fresh, refresh, t.cfg.interval, t.cfg.timeout);
    if (ok) {
        t.fresh = false;
        if (refresh || change !== undefined) t.dWritten = at;
    } else {
        tn.storeErrors = tn.storeErrors + 1;
        if (tn.storeErrors === 1 || tn.storeErrors % 1000 === 0) ngx.log(ngx.ERR, "dyups: health check of ", t.addr, ": ", err, " (", tn.storeErrors, " so far)");
    }
    if (change === "down") {
        ngx.log(ngx.ERR, "dyups: disable check peer: ", t.addr, " (", t.cfg.type, t.port !== 0 && t.cfg.port > 0 ? ` port ${t.port}` : "",
            ", upstream ", table.concat(namesOf(t), ","), "): down after ", st.fall, st.fall === 1 ? " failure: " : " failures: ", reason);
    } else if (change === "up") {
        ngx.log(ngx.ERR, "dyups: enable check peer: ", t.addr, " (", t.cfg.type, t.port !== 0 && t.cfg.port > 0 ? ` port ${t.port}` : "",
            ", upstream ", table.concat(namesOf(t), ","), "): up after ", st.rise, st.rise === 1 ? " success" : " successes");
    }
}

function runOne(tn: Tenure, t: Target): void {
    // the event loop's time (refreshed at every wake-up): no time update per probe
    const start = ngx.now();
    const lag = (start - t.due) * 1000;
    tn.lagN = tn.lagN + 1;
    tn.lags.set(((tn.lagN - 1) % LAG_RING) + 1, lag);
    if (lag > tn.lagMax) tn.lagMax = lag;
    if (lag > t.cfg.interval) tn.late = tn.late + 1;
    tn.inflight = tn.inflight + 1;
    const [ok, reason] = pcall(probeYielding, t);
    tn.inflight = tn.inflight - 1;
    tn.probes = tn.probes + 1;
    if (t.removed || tn.stop) return;
    const first = t.fresh;
    if (ok) record(tn, t, reason === "", reason);
    else record(tn, t, false, `probe error: ${tostring(reason)}`);
    const interval = t.cfg.interval / 1000;
    // after a new peer's first probe (run at once), its schedule starts at a random point of
    // [interval, 1.5 interval) (the module's spacing range), so peers created together do not probe in step
    t.due = ngx.now() + interval + (first ? math.random() * math.min(interval, 1) * 0.5 : 0);
    heapPush(tn.heap, t);
}

/**
 * A probing light thread: takes queued targets while there are any, then waits. The loop wakes only idle
 * threads (at most one per queued target), so a busy thread goes from probe to probe without a wake-up.
 */
function probeThread(tn: Tenure): void {
    while (!tn.stop) {
        while (tn.qHead < tn.qTail && !tn.stop) {
            tn.qHead = tn.qHead + 1;
            const t = tn.queue.get(tn.qHead) as Target;
            tn.queue.delete(tn.qHead);
            if (!t.removed) runOne(tn, t);
        }
        tn.idle = tn.idle + 1;
        tn.sema.wait(1);
        tn.idle = tn.idle - 1;
    }
}

function percentile(sorted: number[], p: number): number {
    const n = sorted.length;
    if (n === 0) return 0;
    return sorted[math.max(0, math.min(n - 1, math.ceil(p * n) - 1))];
}

function publish(tn: Tenure, at: number): void {
    const lags: number[] = [];
    const n = math.min(tn.lagN, LAG_RING);
    for (let i = 1; i <= n; i++) lags[i - 1] = tn.lags.get(i);
    table.sort(lags);
    const dt = at - tn.lastStats;
    const rate = dt > 0 ? (tn.probes - tn.lastProbes) / dt : 0;
    tn.lastProbes = tn.probes;
    tn.lastStats = at;
    const r = (x: number) => math.floor(x * 10 + 0.5) / 10;
    writeProberStats(
        `{"pid":${ngx.worker.pid()},"since":${tn.started},"targets":${tn.ts.count},"concurrency":${getOptions().check_concurrency},` +
        `"in_flight":${tn.inflight},"queued":${tn.qTail - tn.qHead},"probes":${tn.probes},"probes_per_s":${r(rate)},"late":${tn.late},` +
        `"lag_ms":{"p50":${r(percentile(lags, 0.5))},"p99":${r(percentile(lags, 0.99))},"max":${r(tn.lagMax)},"samples":${n}},"store_errors":${tn.storeErrors},"at":${at}}`,
    );
}

function releaseDue(tn: Tenure, at: number): void {
    const due: string[] = [];
    for (const [id, when] of pairs(tn.released)) if (when <= at) due[due.length] = id;
    for (const [, id] of ipairs(due)) {
        tn.released.delete(id);
        if (tn.ts.byId.get(id) === undefined) deleteState(id);
    }
}

function loop(tn: Tenure): void {
    const conc = getOptions().check_concurrency;
    const threads: NgxThread[] = [];
    for (let i = 1; i <= conc; i++) threads[i - 1] = ngx.thread.spawn(probeThread, tn);
    syncTargets(tn, true);
    let lastRenew = now();
    let lastPublish = lastRenew;
    while (!tn.stop) {
        const at = now();
        if (at - lastRenew >= RENEW_EVERY) {
            if (!renew(LEASE, LEASE_TTL)) {
                ngx.log(ngx.WARN, "dyups: health prober lost its lease; another worker probes now");
                break;
            }
            lastRenew = at;
            releaseDue(tn, at);
        }
        if (at - lastPublish >= 1) {
            lastPublish = at;
            publish(tn, at);
        }
        if (ngx.worker.exiting()) break;
        syncTargets(tn, false);
        let posted = 0;
        let top = heapTop(tn.heap);
        while (top !== undefined && top.due <= at) {
            heapPop(tn.heap);
            if (!top.removed) {
                tn.qTail = tn.qTail + 1;
                tn.queue.set(tn.qTail, top);
                posted = posted + 1;
            }
            top = heapTop(tn.heap);
        }
        if (posted > 0) {
            // wake idle threads only, one per queued target, minus wake-ups already posted and not yet taken
            const queued = tn.qTail - tn.qHead;
            const wake = math.min(queued, tn.idle) - math.max(tn.sema.count(), 0);
            if (wake > 0) tn.sema.post(wake);
        }
        let wait = top !== undefined ? top.due - at : MAX_SLEEP;
        if (wait > MAX_SLEEP) wait = MAX_SLEEP;
        if (wait < 0.001) wait = 0.001;
        ngx.sleep(wait);
    }
    tn.stop = true;
    tn.sema.post(conc);
    for (const [, th] of ipairs(threads)) ngx.thread.wait(th);
}

function runner(premature: boolean): void {
    if (premature) {
        running = false;
        release(LEASE);
        return;
    }
    const [sema, serr] = semaphore.new(0);
    if (sema === undefined) {
        ngx.log(ngx.ERR, "dyups: health prober: cannot create a semaphore: ", serr);
        running = false;
        release(LEASE);
        return;
    }
    const at = now();
    const tn: Tenure = {
        ts: newTargetSet(), heap: newHeap(), queue: new LuaTable(), qHead: 0, qTail: 0, sema, stop: false, applied: -1,
        released: new LuaTable(), inflight: 0, idle: 0, started: at, probes: 0, late: 0, lagMax: 0, lags: new LuaTable(), lagN: 0,
        lastProbes: 0, lastStats: at, storeErrors: 0,
    };
    current = tn;
    ngx.log(ngx.NOTICE, "dyups: worker ", ngx.worker.id(), " (pid ", ngx.worker.pid(), ") runs the health checks");
    const [ok, err] = pcall(loop, tn);
    if (!ok) ngx.log(ngx.ALERT, "dyups: health prober failed: ", err);
    tn.stop = true;
    current = undefined;
    running = false;
    release(LEASE);
}
