/** @noSelfInFile */
// The node's follower of etcd: one elected worker per node (lease "cluster", store/lease.ts) reads every
// upstream key under the prefix, applies the differences to the local command log (names gone from etcd are
// deleted here), then watches the prefix from the next revision and applies each event. Every worker of the
// node then converges from the command log exactly as in the embedded mode.
//
// A session = one full read + one watch. Any end of a session (etcd closed the watch, it was compacted,
// the member lost its leader, the member stopped answering the check) starts a new session, on the next
// endpoint after a failure, after a back-off of 0.1 s doubling to 1 s: a full read and a diff every time, so
// a broken or compacted watch can never leave a gap. Applies are monotonic per name (apply.ts), so a full
// read racing with a local write, or an event the writer already applied, changes nothing.
//
// Inside a session the watch stream is read by a light thread that only reads and queues lines; the timer's
// own thread applies them (woken by a semaphore), checks the member every CHECK_INTERVAL with another light
// thread (a count of the prefix: etcd's revision for the lag, the number of upstreams for /status), and stops
// the readers when the worker exits or loses the lease. Killing a light thread blocked on a cosocket is
// safe; killing one inside a commit would not be, which is why readers never commit.
//
// Phases: tick from the sync timer (every worker); the loop runs in its own timer (ngx.timer.at) while the
// worker holds the lease. shm: store/cluster (applied revision, seen revision, count, watcher info), the
// command log through apply.ts, the lease.
// Costs: a full read is O(upstreams in etcd + local upstreams), yielding every 200 applies; an event is one
// parse + build + commit; the check is one small request per second per node.
import * as cjson from "cjson.safe";
import { Result } from "../errors";
import type { Semaphore } from "ngx.semaphore";
import { getOptions } from "../options";
import { allNames, readRaw, upstreamCount } from "../store/command_log";
import {
    appliedRevision, clusterId, localRevision, noteRevision, resetSeenRevision, saveWatcherInfo, setAppliedRevision, setClusterId, setEtcdCount,
    WatcherInfo,
} from "../store/cluster";
import { claim, release, renew } from "../store/lease";
import { deferSave } from "../store/state_file";
import { applyRevision, applyValue } from "./apply";
import { ClusterConfig, EtcdEndpoint, LEASE, nameOfKey, prefixEnd, upstreamsPrefix } from "./config";
import { b64, callEndpoint, currentEndpoint, headerRevision, KeyValue, num, openWatch, rangeAll, rotate, unb64 } from "./etcd";
import { closeStream, HttpStream, readStream, streamTimeout } from "./http_client";
import { newPacer, turn } from "../pace";

/** lua-resty-core's ngx.semaphore, loaded on first use (it needs a real nginx; specs load this module without one) */
let semaphores: { new: (this: void, n?: number) => LuaMultiReturn<[Semaphore | undefined, string | undefined]> } | undefined;
/** seconds between checks of the watched member */
const CHECK_INTERVAL = 1;
/** consecutive failed checks after which the watch is dropped and a new session starts */
const CHECK_FAILURES = 2;
/** the watch's read timeout (ms): effectively none; a dead member is found by the check */
const WATCH_READ_TIMEOUT = 24 * 3600 * 1000;
/** a full read yields to the worker's other requests every this many applies */
const YIELD_EVERY = 200;
/** seconds before upstreams this node could not apply (full dict, max_upstreams) are tried again */
const RETRY_REJECTED = 10;

let running = false;
let info: WatcherInfo = { state: "starting", pid: 0, since: 0, full_reads: 0, events: 0 };
/** names this node could not apply -> the status that refused them (400: never retried) */
let rejectedStatus: LuaTable<string, number> = new LuaTable();

function config(): ClusterConfig {
    return getOptions().cluster as ClusterConfig;
}

/**
 * Seconds the lease survives its holder's silence. A dead holder's lease is taken over at once (lease.ts
 * checks its pid), so this only bounds a holder that lives but stopped renewing (a worker busy with a long
 * state-file save or a 10 000-upstream read must not lose it to a second watcher).
 */
export function leaseTtl(): number {
    return math.max(10, 3 * getOptions().sync_interval);
}

/** true while this worker should go on watching; renews the lease (the loop renews it, and the tick too). */
function alive(): boolean {
    return !ngx.worker.exiting() && renew(LEASE, leaseTtl());
}

function setState(state: string): void {
    info.state = state;
    saveWatcherInfo(info);
}

function noteError(err: string): void {
    if (err !== info.last_error) ngx.log(ngx.ERR, "dyups: cluster: ", err);
    info.last_error = err;
    info.last_error_at = ngx.now();
    saveWatcherInfo(info);
}

function reject(name: string, reason: string, status: number): void {
    const rejected = info.rejected ?? new LuaTable<string, string>();
    info.rejected = rejected;
    if (rejected.get(name) !== reason) ngx.log(ngx.ERR, "dyups: cluster: upstream ", name, " from etcd cannot be applied here: ", reason);
    rejected.set(name, reason);
    rejectedStatus.set(name, status);
}

function accept(name: string): void {
    if (info.rejected !== undefined && info.rejected.get(name) !== undefined) {
        info.rejected.delete(name);
        rejectedStatus.delete(name);
        if (next(info.rejected)[0] === undefined) info.rejected = undefined;
    }
}

/**
 * Applies etcd's state of NAME at `rev` (value: base64, or undefined for a deletion) unless this node has it.
 * Returns true when it changed something here.
 */
function applyOne(name: string, value: string | undefined, rev: number, force?: boolean, quiet?: boolean): boolean {
    const raw = readRaw(name);
    const local = localRevision(name, raw);
    if (force === true ? (local === rev && raw !== undefined && value !== undefined && sameBody(raw, value)) : local >= rev) {
        accept(name);
        return false;
    }
    const [done, reason, status] = applyValue(name, value === undefined ? undefined : unb64(value), rev, force, quiet);
    if (reason !== undefined) reject(name, reason, status as number);
    else accept(name);
    return done === true;
}

/** true when the stored record's body is the body of etcd's value (base64 JSON). */
function sameBody(raw: string, value: string): boolean {
    const [rec] = cjson.decode(raw);
    const [stored] = cjson.decode(unb64(value));
    return rec !== undefined && stored !== undefined && type(stored) === "table"
        && (rec as { body?: string }).body === (stored as { body?: string }).body;
}

/** Reads every upstream key and applies the differences. Returns the revision read at. */
function fullRead(c: ClusterConfig): Result<number> {
    const folder = upstreamsPrefix(c);
    ngx.update_time();
    const t0 = ngx.now();
    const [snap, err] = rangeAll(folder, prefixEnd(folder));
    if (snap === undefined) return $multi(undefined, `cannot read ${folder} from etcd: ${err as string}`);
    const at = snap.revision;
    const kvs = snap.kvs;
    // etcd's revisions only grow, within one etcd cluster: lower than what this node applied, or another
    // cluster id, means etcd was restored from a backup or replaced. Its state wins as it is (comparing its
    // revisions with the ones this node holds means nothing). The first read after a start (a fresh dict,
    // maybe loaded from the state file while etcd was replaced) is taken as it is too.
    const known = clusterId();
    const first = appliedRevision() === 0;
    // a node's first read into an empty store is a load, as the state file at start: one summary line below and
    // a history entry per upstream, no audit line per upstream (each write was audited on the node that made it)
    const loading = first && upstreamCount() === 0;
    const back = first || at < appliedRevision() || (known !== undefined && known !== snap.clusterId);
    if (back && !first) {
        ngx.log(ngx.WARN, "dyups: cluster: etcd was restored or replaced (revision ", appliedRevision(), " -> ", at, ", cluster ",
            known ?? "?", " -> ", snap.clusterId, "): this node takes etcd's state as it is");
        resetSeenRevision(at);
    }
    setClusterId(snap.clusterId);
    noteRevision(at);
    ngx.update_time();
    const t1 = ngx.now();
    let changed = 0;
    // creation order in etcd = listing order here (a new node lists upstreams like the others)
    table.sort(kvs, (a: KeyValue, b: KeyValue) => a.create_revision < b.create_revision);
    const seen: LuaTable<string, boolean> = new LuaTable();
    let count = 0;
    const pacer = newPacer();
    for (const [, kv] of ipairs(kvs)) {
        const name = nameOfKey(c, kv.key);
        if (name !== undefined) {
            seen.set(name, true);
            count = count + 1;
            if (applyOne(name, kv.value ?? "", kv.mod_revision, back, loading)) changed = changed + 1;
            if (count % YIELD_EVERY === 0) {
                if (changed > 0) deferSave(1); // the state file is written once, after the read
                turn(pacer); // not ngx.sleep(0): without OpenResty's delayed-events patch it logs a warning
                if (!alive()) return $multi(undefined, "the watcher stopped (worker exiting or lease lost)");
            }
        }
    }
    for (const [, name] of ipairs(allNames())) {
        if (seen.get(name) !== true) {
            const [done, reason] = applyRevision(name, undefined, at, back);
            if (done === true) changed = changed + 1;
            if (reason !== undefined) noteError(`cannot delete upstream ${name} (gone from etcd): ${reason}`);
            accept(name);
        }
    }
    for (const [name] of pairs(rejectedStatus)) if (seen.get(name) !== true) accept(name);
    setAppliedRevision(at);
    setEtcdCount(count);
    info.full_reads = info.full_reads + 1;
    ngx.update_time();
    ngx.log(ngx.NOTICE, "dyups: cluster: read ", count, " upstreams from etcd at revision ", at, " in ",
        math.floor((t1 - t0) * 1000), " ms, applied ", changed, " changes in ", math.floor((ngx.now() - t1) * 1000), " ms",
        loading ? " (a load into an empty store: recorded in the history, no audit line per upstream)" : "");
    return $multi(at, undefined);
}

/** Lines read from the watch, and how the reader ended. Shared by the reader thread and the loop. */
interface Inbox {
    lines: LuaTable<number, string>;
    head: number;
    tail: number;
    ended?: string;
    sema: Semaphore;
}

/** The reader thread: reads the stream, splits it into lines, queues them. Never touches shm. */
function readLoop(this: void, s: HttpStream, box: Inbox): void {
    let partial = "";
    for (;;) {
        const [data, err] = readStream(s);
        if (data === undefined && err === "timeout") continue;
        if (data === undefined || data === "") {
            box.ended = data === "" ? "etcd ended the watch" : `the watch broke: ${err as string}`;
            box.sema.post(1);
            return;
        }
        partial = partial + data;
        let pos = 1;
        for (;;) {
            const [nl] = string.find(partial, "\n", pos, true);
            if (nl === undefined) break;
            if (nl > pos) {
                box.tail = box.tail + 1;
                box.lines.set(box.tail, string.sub(partial, pos, nl - 1));
            }
            pos = nl + 1;
        }
        partial = pos > 1 ? string.sub(partial, pos) : partial;
        box.sema.post(1);
    }
}

interface WatchEvent {
    type?: string;
    kv?: { key?: string; value?: string; mod_revision?: string };
}

interface WatchResult {
    header?: { revision?: string };
    created?: boolean;
    canceled?: boolean;
    compact_revision?: string;
    cancel_reason?: string;
    events?: WatchEvent[];
}

/**
 * Handles one answer of the watch. Returns undefined to go on, or how the session ends: [true] (start a new
 * session now: compaction) or [false, reason].
 */
export function handleAnswer(c: ClusterConfig, line: string): LuaMultiReturn<[boolean, string | undefined] | [undefined, undefined]> {
    const [msg] = cjson.decode(line);
    if (msg === undefined || type(msg) !== "table") return $multi(false, `etcd sent a watch answer that is not JSON: ${string.sub(line, 1, 120)}`);
    const m = msg as { result?: WatchResult; error?: { message?: string; error?: string } };
    if (m.error !== undefined) return $multi(false, `etcd ended the watch: ${m.error.message ?? m.error.error ?? "error"}`);
    const r = m.result;
    if (r === undefined) return $multi(undefined, undefined);
    if (r.header !== undefined) noteRevision(num(r.header.revision));
    if (r.canceled === true) {
        const compacted = num(r.compact_revision);
        if (compacted > 0) {
            ngx.log(ngx.NOTICE, "dyups: cluster: the watch from revision ", appliedRevision() + 1, " was compacted (etcd keeps revision ",
                compacted, " on): reading every upstream again");
            return $multi(true, undefined);
        }
        return $multi(false, `etcd canceled the watch: ${r.cancel_reason ?? "no reason given"}`);
    }
    if (r.events === undefined) return $multi(undefined, undefined);
    let applied = appliedRevision();
    let n = 0;
    for (const [, ev] of ipairs(r.events)) {
        const kv = ev.kv;
        if (kv !== undefined) {
            const rev = num(kv.mod_revision);
            const name = nameOfKey(c, unb64(kv.key));
            if (name !== undefined) {
                applyOne(name, ev.type === "DELETE" ? undefined : (kv.value ?? ""), rev);
                n = n + 1;
            }
            if (rev > applied) applied = rev;
        }
    }
    setAppliedRevision(applied);
    info.events = info.events + n;
    info.last_event_at = ngx.now();
    saveWatcherInfo(info);
    return $multi(undefined, undefined);
}

interface Check {
    done: boolean;
    err?: string;
}

/** The check thread: one count of the prefix on the watched member. */
function check(this: void, ep: EtcdEndpoint, folder: string, box: Check, sema: Semaphore): void {
    const [doc, err] = callEndpoint(ep, "/v3/kv/range", { key: b64(folder), range_end: b64(prefixEnd(folder)), count_only: true }, 2000);
    if (doc !== undefined) {
        noteRevision(headerRevision(doc));
        setEtcdCount(num(doc.get("count")));
    } else {
        box.err = err;
    }
    box.done = true;
    sema.post(1);
}

function retryDue(since: number): boolean {
    if (ngx.now() - since < RETRY_REJECTED) return false;
    for (const [, status] of pairs(rejectedStatus)) if (status !== 400) return true;
    return false;
}

/** One session: full read, then watch until it ends. Returns [true] to start over at once, or [false, reason]. */
function session(): LuaMultiReturn<[boolean, string | undefined]> {
    const c = config();
    setState("reading");
    const [rev, rerr] = fullRead(c);
    if (rev === undefined) return $multi(false, rerr);
    const started = ngx.now();
    const ep = currentEndpoint();
    const folder = upstreamsPrefix(c);
    const [stream, werr] = openWatch(ep, folder, prefixEnd(folder), rev + 1);
    if (stream === undefined) return $multi(false, `cannot watch ${folder} at ${ep.name}: ${werr as string}`);
    streamTimeout(stream, WATCH_READ_TIMEOUT);
    if (semaphores === undefined) semaphores = require("ngx.semaphore");
    const [sema] = (semaphores as NonNullable<typeof semaphores>).new(0);
    const box: Inbox = { lines: new LuaTable(), head: 1, tail: 0, sema: sema as Semaphore };
    const reader = ngx.thread.spawn(readLoop, stream, box);
    info.endpoint = ep.name;
    info.since = ngx.now();
    setState("watching");
    let checker: NgxThread | undefined;
    let probe: Check = { done: true };
    let nextCheck = ngx.now() + CHECK_INTERVAL;
    let failures = 0;
    let outcome: boolean = true;
    let reason: string | undefined;
    for (;;) {
        box.sema.wait(0.5);
        let ended = false;
        while (box.head <= box.tail && !ended) {
            const line = box.lines.get(box.head);
            box.lines.delete(box.head);
            box.head = box.head + 1;
            const [stop, why] = handleAnswer(c, line);
            if (stop !== undefined) {
                ended = true;
                outcome = stop;
                reason = why;
            }
        }
        if (ended) break;
        if (box.ended !== undefined) {
            outcome = false;
            reason = `${box.ended} (${ep.name})`;
            break;
        }
        if (!alive()) break;
        ngx.update_time();
        const now = ngx.now();
        if (probe.done && checker !== undefined) {
            checker = undefined;
            if (probe.err !== undefined) {
                failures = failures + 1;
                noteError(`check of ${ep.name} failed: ${probe.err}`);
                if (failures >= CHECK_FAILURES) {
                    outcome = false;
                    reason = `etcd ${ep.name} stopped answering (${probe.err})`;
                    break;
                }
            } else failures = 0;
        }
        if (checker === undefined && now >= nextCheck) {
            nextCheck = now + CHECK_INTERVAL;
            probe = { done: false };
            checker = ngx.thread.spawn(check, ep, folder, probe, box.sema);
        }
        if (retryDue(started)) break; // a new session: the full read applies what could not be applied before
    }
    ngx.thread.kill(reader);
    if (checker !== undefined && !probe.done) ngx.thread.kill(checker);
    closeStream(stream);
    return $multi(outcome, reason);
}

function loop(): void {
    info = { state: "starting", pid: ngx.worker.pid(), since: ngx.now(), full_reads: 0, events: 0 };
    rejectedStatus = new LuaTable();
    ngx.log(ngx.NOTICE, "dyups: cluster: worker ", ngx.worker.id(), " (pid ", ngx.worker.pid(), ") follows etcd ", config().prefix);
    let backoff = 0.1;
    while (alive()) {
        const [ok, reason] = session();
        if (!alive()) break;
        if (ok) {
            backoff = 0.1;
            if (reason !== undefined) ngx.log(ngx.INFO, "dyups: cluster: ", reason);
        } else {
            noteError(reason ?? "the session ended");
            setState("retrying");
            rotate();
            ngx.sleep(backoff);
            backoff = math.min(backoff * 2, 1);
        }
    }
    setState(ngx.worker.exiting() ? "stopped" : "handed over");
}

function watchLoop(this: void, premature: boolean): void {
    if (!premature) {
        const [ok, err] = pcall(loop);
        if (!ok) ngx.log(ngx.ERR, "dyups: cluster: the watcher failed: ", err);
    }
    running = false;
    if (ngx.worker.exiting()) release(LEASE);
}

/**
 * The cluster part of the sync tick (every worker, every sync_interval): the holder renews the lease; the
 * others take it when it is free or its holder died, and start the loop. One shm operation when nothing
 * changes.
 */
export function clusterTick(): void {
    if (getOptions().cluster === undefined || ngx.worker.exiting()) return;
    if (running) {
        renew(LEASE, leaseTtl());
        return;
    }
    if (!claim(LEASE, leaseTtl())) return;
    running = true;
    const [ok, err] = ngx.timer.at(0, watchLoop);
    if (!ok) {
        running = false;
        release(LEASE);
        ngx.log(ngx.ERR, "dyups: cluster: cannot start the watcher: ", err);
    }
}

/** Worker exit (premature tick): hands the lease over at once. The loop stops by itself within 0.5 s. */
export function clusterRelease(): void {
    if (getOptions().cluster !== undefined) release(LEASE);
}
