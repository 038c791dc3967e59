/** @noSelfInFile */
// The per-worker registry: upstream name -> the immutable UpstreamVersion this worker routes by, kept in step
// with the command log. sync() is the per-request version gate (one shm get when nothing changed); catching
// up applies the names changed since the last applied version, or rebuilds everything when the log was
// compacted past us (or at worker start).
//
// Lazy builds: applying a change only records the upstream's revision. Its peer set is built from the stored
// record when a request first needs it in this worker (lookup), and from then on eagerly at every change (an
// upstream in use is rebuilt by the catch-up, not by the next request). A worker that never routes to most of
// 10 000 upstreams keeps a name and a number for each, not 10 000 peer sets: less heap, less GC work, faster
// catch-up. The stored record can be newer than the applied revision only between a commit and this worker's
// next sync (the balancer syncs just before its lookup); a lazy build then takes the newer one, which the
// next catch-up confirms.
//
// Refcounts: a request pins a version (refs + 1) at its first balancer try and releases it in the log phase.
// A replaced or deleted version is retired; it stays in `retired` until its last holder releases it.
// Versions own nothing outside the Lua heap (peer state is keyed by address in shm and survives versions),
// so release only unlinks them; their peer sets go to the GC with the last reference.
// Phases: any (balancer included): no yields, only shm reads and JSON decoding.
import { revisionHash } from "../digest";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import {
    allNames, changedSince, currentVersion, decodeRecord, HAS_CHECK, MAY_HAVE_DISPLAY, readRaw, readRecordWith, storedCreated, storedHas,
    storedRevision,
} from "../store/command_log";
import { publishHeartbeat } from "../store/workers";
import { slotsInUse } from "../phases/request_slot";
import { tryBuild, UpstreamVersion } from "./build";
import * as order from "./order";

export { revisionHash };

/** built versions (the hot path's O(1) lookup) */
const byName: LuaTable<string, UpstreamVersion> = new LuaTable();
/** the applied revision of every current upstream */
const revs: LuaTable<string, number> = new LuaTable();
/** name -> the revision whose build failed (not retried per request; the next revision is) */
const failed: LuaTable<string, number> = new LuaTable();
const retired: LuaTable<UpstreamVersion, boolean> = new LuaTable();
let retiredCount = 0;
let upstreamCount = 0;
let builtCount = 0;
let applied = 0;
/** XOR of revisionHash(name, rev) over this worker's versions: equal digests = identical routing state */
let digest = 0;

/** names whose current record has active health checks (the check_status page and /status list only those) */
const checked: LuaTable<string, boolean> = new LuaTable();

/** during rebuildAll: name -> creation version of what it applied (the order is re-sorted once at the end) */
let bulk: LuaTable<string, number> | undefined;

function retire(ver: UpstreamVersion): void {
    ver.retired = true;
    if (ver.refs <= 0) return;
    retired.set(ver, true);
    retiredCount = retiredCount + 1;
}

/** Called when a request releases a retired version: the last holder unlinks it. */
export function releaseRetired(ver: UpstreamVersion): void {
    if (retired.get(ver) === true) {
        retired.delete(ver);
        retiredCount = retiredCount - 1;
    }
}

/** Builds a version; undefined when that fails (a bug, logged at alert; not retried for this revision). */
function build(name: string, rec: UpstreamRecord): UpstreamVersion | undefined {
    const [ver] = tryBuild(rec);
    if (ver === undefined) failed.set(name, rec.rev);
    return ver;
}

function link(name: string, ver: UpstreamVersion): void {
    byName.set(name, ver);
    builtCount = builtCount + 1;
}

function unlink(name: string): void {
    const old = byName.get(name);
    if (old !== undefined) {
        byName.delete(name);
        builtCount = builtCount - 1;
        retire(old);
    }
    failed.delete(name);
}

/** NAME (applied at revision rev) is gone from the store. */
function drop(name: string, rev: number): void {
    revs.delete(name);
    checked.delete(name);
    order.forget(name);
    upstreamCount = upstreamCount - 1;
    digest = digest ^ revisionHash(name, rev);
    unlink(name);
}

function applyName(name: string): void {
    const raw = readRaw(name);
    const oldRev = revs.get(name);
    if (raw === undefined) {
        if (oldRev !== undefined) drop(name, oldRev);
        return;
    }
    // an upstream no request routes to in this worker is not decoded: its revision, creation version and
    // check flag are read from the stored text (most of a bulk change's catch-up, in every worker)
    const inUse = byName.get(name) !== undefined;
    let rev = storedRevision(raw);
    if (rev === oldRev) return;
    let rec: UpstreamRecord | undefined;
    let created: number;
    let display: string | undefined;
    let hasCheck: boolean;
    if (inUse || rev === 0 || storedHas(raw, MAY_HAVE_DISPLAY)) {
        rec = decodeRecord(name, raw);
        if (rec === undefined || rec.rev === oldRev) return;
        rev = rec.rev;
        created = rec.created ?? rec.rev;
        display = rec.display;
        hasCheck = rec.spec.check !== undefined;
    } else {
        const c = storedCreated(raw);
        created = c > 0 ? c : rev;
        hasCheck = storedHas(raw, HAS_CHECK);
    }
    revs.set(name, rev);
    if (hasCheck) checked.set(name, true);
    else checked.delete(name);
    if (bulk !== undefined) {
        bulk.set(name, created);
        order.display(name, display);
    } else {
        order.place(name, created, display);
    }
    digest = digest ^ revisionHash(name, rev);
    if (oldRev !== undefined) digest = digest ^ revisionHash(name, oldRev);
    else upstreamCount = upstreamCount + 1;
    unlink(name);
    if (!inUse || rec === undefined) return;
    const ver = build(name, rec);
    if (ver !== undefined) link(name, ver);
}

function rebuildAll(): void {
    const seen: LuaTable<string, boolean> = new LuaTable();
    const created: LuaTable<string, number> = new LuaTable();
    bulk = created;
    for (const [, name] of ipairs(allNames())) {
        seen.set(name, true);
        applyName(name);
    }
    bulk = undefined;
    for (const [name, rev] of pairs(revs)) {
        if (seen.get(name) !== true) drop(name, rev);
        else if (created.get(name) === undefined) created.set(name, order.createdOf(name) ?? rev);
    }
    order.rebuild(created);
}

function publish(): void {
    publishHeartbeat(ngx.worker.id(), {
        pid: ngx.worker.pid(), applied, at: ngx.now(), digest, retired: retiredCount,
        luaKb: math.floor(collectgarbage("count")), inflight: slotsInUse(),
    });
}

/** Catch up to version `v` (or to the current one). Returns how many names were applied (-1: full rebuild). */
export function catchUp(v?: number): number {
    const target = v ?? currentVersion();
    if (target === applied) return 0;
    const from = applied;
    let count = 0;
    const names = target > applied ? changedSince(applied, target) : undefined;
    if (names === undefined) {
        rebuildAll();
        count = -1;
    } else {
        const done: LuaTable<string, boolean> = new LuaTable();
        for (const [, name] of ipairs(names)) {
            if (done.get(name) !== true) {
                done.set(name, true);
                applyName(name);
                count = count + 1;
            }
        }
    }
    applied = target;
    publish();
    if (getOptions().read_msg_log) {
        ngx.log(ngx.INFO, "[dyups] worker ", ngx.worker.id(), " caught up from version ", from, " to ", target,
            count < 0 ? " (full rebuild)" : ` (${count} upstreams)`, ", has ", upstreamCount, " upstreams, ", retiredCount, " retired");
    }
    return count;
}

/** The version gate: one shm get when nothing changed. */
export function sync(): void {
    const v = currentVersion();
    if (v !== applied) catchUp(v);
}

/** The version this worker routes by for NAME (lowercase), or undefined. O(1); builds it on first use. */
export function lookup(name: string): UpstreamVersion | undefined {
    const ver = byName.get(name);
    if (ver !== undefined) return ver;
    const rev = revs.get(name);
    if (rev === undefined || failed.get(name) === rev) return undefined;
    const rec = record(name);
    if (rec === undefined) return undefined; // deleted since: the next sync applies it
    const built = build(name, rec);
    if (built !== undefined) link(name, built);
    return built;
}

/**
 * NAME's stored record (lowercase name), or undefined when this worker has no such upstream. Its rev can be
 * newer than revision(name) between a commit and this worker's next catch-up: callers that care compare.
 */
export function record(name: string): UpstreamRecord | undefined {
    if (revs.get(name) === undefined) return undefined;
    const raw = readRaw(name);
    return raw === undefined ? undefined : decodeRecord(name, raw);
}

/** record(name) when its stored text contains `needle` (command_log.readRecordWith); others are not decoded. */
export function recordWith(name: string, needle: string): UpstreamRecord | undefined {
    if (revs.get(name) === undefined) return undefined;
    return readRecordWith(name, needle);
}

/** The upstreams with active health checks, in creation order. O(c log c) for c of them. */
export function checkedNames(): string[] {
    const out: string[] = [];
    for (const [name] of pairs(checked)) out[out.length] = name;
    table.sort(out, (a: string, b: string) => (order.positionAfter(a) ?? 0) < (order.positionAfter(b) ?? 0));
    return out;
}

/** The revision this worker routes by for NAME, or undefined. */
export function revision(name: string): number | undefined {
    return revs.get(name);
}

export function appliedVersion(): number {
    return applied;
}

/** Heartbeat for the status view (timer). */
export function heartbeat(): void {
    publish();
}

export interface RegistryStats {
    applied: number;
    digest: number;
    upstreams: number;
    /** upstreams whose peer set this worker has built (the others have not been routed to yet) */
    built: number;
    retired: number;
    /** refs held on current versions, by name (only names with refs > 0; empty unless asked for) */
    refs: LuaTable<string, number>;
    retiredRefs: number;
}

/** This worker's figures; `withRefs` adds the refs held per current version (a walk of the built versions). */
export function stats(withRefs?: boolean): RegistryStats {
    const refs: LuaTable<string, number> = new LuaTable();
    if (withRefs === true) for (const [name, ver] of pairs(byName)) if (ver.refs > 0) refs.set(name, ver.refs);
    let rr = 0;
    for (const [ver] of pairs(retired)) rr = rr + ver.refs;
    return { applied, digest, upstreams: upstreamCount, built: builtCount, retired: retiredCount, refs, retiredRefs: rr };
}

/** The names of current upstreams with their revisions, to iterate with for..of (status, DNS). Read only. */
export function eachName(): LuaPairsIterable<string, number> {
    return revs;
}
