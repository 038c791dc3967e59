/** @noSelfInFile */
// Re-resolution of host names by TTL. Timer phase only (the sync tick of dyups.startup calls dnsTick() every
// sync_interval in every worker); never on the request path. See dyups.dns.resolve for the first resolution
// (when a body is applied) and dyups.dns.policy for the rules (TTL clamp, jitter, back-off, serve-stale).
//
// Ownership: one worker resolves at a time: the holder of the `dns` lease (store/lease.ts). Each tick every
// worker claims it; the holder renews it (TTL ownerTtl(): max(2 s, 3 ticks)), a dead holder (SIGKILL) is
// taken over at the next tick of another worker. The owner's memory holds only derived data (which upstreams use which query, when each is due),
// rebuilt from the registry when it takes over; what must survive a hand-off (answers, next-refresh times,
// errors, stale-since) lives in shm (store/dns.ts).
// Race accepted: a renewal is get + set, so a key that expired between the two is re-set by the old owner
// while a new one may have added it; both may resolve for one TTL. Harmless: results are conditional commits.
//
// Results enter the command log like interface writes: commit(name, record with new endpoints, rev it was
// computed from), source "dns", only when a server's sorted endpoint set really changed. A concurrent
// interface write wins (412): the registry catches up, the index sees the new revision and recomputes.
//
// Cost when nothing is due: owner 2 shm ops (get + renew), others 1; no decoding, no allocation.
// A pass (something due) runs at most once at a time per worker; ticks that overlap a long pass only renew.
import { Endpoint, ServerSpec, UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { releaseVanished, tryBuild } from "../registry/build";
import { appliedVersion, eachName, record, recordWith, revision } from "../registry/sync";
import { changedSince, commit, HAS_HOST_NAME } from "../store/command_log";
import { deleteQuery, loadQuery, saveQuery, writeQueryIndex } from "../store/dns";
import { claim as claimLease, release } from "../store/lease";
import { DnsLimits, newState, onAnswer, onFailure, QueryState, queryKey, sameEndpoints, serverEndpoints, Transition } from "./policy";
import { lookupA, lookupSrv } from "./resolve";
import { auditWrite, DNS_SOURCE } from "../audit";
import { allowedOnly } from "../targets";

interface Watch {
    rev: number;
    /** server index -> query key, for the servers DNS manages */
    keys: LuaTable<number, string>;
}

let isOwner = false;
/** the registry version the index reflects; -1: rebuild everything */
let indexed = -1;
const watched: LuaTable<string, Watch> = new LuaTable();
/** query key -> upstream names using it */
const users: LuaTable<string, LuaTable<string, boolean>> = new LuaTable();
/** query key -> next due time (the owner's copy of dns:q:<key>.next) */
const due: LuaTable<string, number> = new LuaTable();
/** upstreams whose endpoints may differ from their queries' answers */
const dirty: LuaTable<string, boolean> = new LuaTable();
let nextDue = 0;
let reconcileAfter = 0;
let namesChanged = false;
let running = false;

/** The lease of the resolving worker (lease:dns). */
export const DNS_LEASE_NAME = "dns";

/** Seconds a dead owner keeps the job: at least 2 s, and 3 ticks. */
export function ownerTtl(): number {
    return math.max(2, 3 * getOptions().sync_interval);
}

function limits(): DnsLimits {
    const o = getOptions();
    return { minTtl: o.dns_min_ttl, maxTtl: o.dns_max_ttl, staleTtl: o.dns_stale_ttl };
}

function resetIndex(): void {
    for (const [k] of pairs(watched)) watched.delete(k);
    for (const [k] of pairs(users)) users.delete(k);
    for (const [k] of pairs(due)) due.delete(k);
    for (const [k] of pairs(dirty)) dirty.delete(k);
    indexed = -1;
    nextDue = 0;
    namesChanged = true;
}

/** true when this worker is (now) the resolver; renews its claim. One or two shm operations. */
function claim(): boolean {
    if (ngx.worker.exiting()) return false;
    return claimLease(DNS_LEASE_NAME, ownerTtl());
}

/** Gives the job up at once (worker exit / reload) so another worker takes it without waiting for the TTL. */
export function dnsRelease(): void {
    release(DNS_LEASE_NAME);
    isOwner = false;
}

const loadState = loadQuery;

function saveState(key: string, st: QueryState, now: number): void {
    const ttl = math.max(st.next - now, 0) + getOptions().dns_stale_ttl + 300;
    const [ok, err] = saveQuery(key, st, ttl);
    if (ok === undefined) ngx.log(ngx.ERR, "dyups: dns: cannot store the state of ", st.q, ": ", err);
}

/** A server DNS manages: names with `resolve`, and names without it that have no address yet (init phases). */
function managed(s: ServerSpec, eps: Endpoint[] | undefined): boolean {
    return s.kind === "name" && (s.resolve || eps === undefined || eps.length === 0);
}

/** The query's state, created (due now) when there is none; `seed` = the endpoints a record already has. */
function ensureState(key: string, s: ServerSpec, eps: Endpoint[] | undefined, now: number): void {
    if (due.get(key) !== undefined) return;
    let st = loadState(key);
    if (st === undefined) {
        const kind = s.service !== undefined ? "srv" : "a";
        let seed: Endpoint[] | undefined;
        if (eps !== undefined && eps.length > 0) {
            seed = [];
            for (const [i, e] of ipairs(eps)) {
                seed[i - 1] = kind === "srv" ? e : { host: e.host, port: 0 };
            }
        }
        st = newState(string.sub(key, kind === "srv" ? 5 : 3), kind, now, seed);
        saveState(key, st, now);
    }
    due.set(key, st.next);
}

function dropUser(key: string, name: string): void {
    const u = users.get(key);
    if (u === undefined) return;
    u.delete(name);
    if (next(u)[0] === undefined) {
        users.delete(key);
        due.delete(key);
        deleteQuery(key);
    }
    namesChanged = true;
}

/** (Re)index one upstream from this worker's registry. O(servers). */
function indexUpstream(name: string, now: number): void {
    const old = watched.get(name);
    // only servers given by a host name are resolved: a record without one is not decoded
    const rec = recordWith(name, HAS_HOST_NAME);
    let w: Watch | undefined;
    if (rec !== undefined) {
        for (const [i, s] of ipairs(rec.spec.servers)) {
            const eps = rec.endpoints[i - 1];
            if (managed(s, eps)) {
                const key = queryKey(s);
                if (w === undefined) w = { rev: rec.rev, keys: new LuaTable() };
                w.keys.set(i, key);
                let u = users.get(key);
                if (u === undefined) {
                    u = new LuaTable();
                    users.set(key, u);
                }
                if (u.get(name) !== true) {
                    u.set(name, true);
                    namesChanged = true;
                }
                ensureState(key, s, eps, now);
            }
        }
    }
    if (w !== undefined) {
        watched.set(name, w);
        dirty.set(name, true);
    } else {
        watched.delete(name);
        dirty.delete(name);
    }
    if (old !== undefined) {
        for (const [, key] of pairs(old.keys)) {
            let still = false;
            if (w !== undefined) for (const [, k2] of pairs(w.keys)) if (k2 === key) still = true;
            if (!still) dropUser(key, name);
        }
    }
}

/** Brings the index up to the registry's version: incrementally from the log, or from scratch. */
function updateIndex(now: number): void {
    const v = appliedVersion();
    const names = indexed >= 0 && v > indexed ? changedSince(indexed, v) : undefined;
    if (names === undefined) {
        const hadIndex = indexed >= 0;
        resetIndex();
        if (hadIndex) {
            // The log was compacted past us: names gone since are not in the registry any more.
            ngx.log(ngx.INFO, "dyups: dns: rebuilding the name index at version ", v);
        }
        for (const [name] of eachName()) indexUpstream(name, now);
    } else {
        const done: LuaTable<string, boolean> = new LuaTable();
        for (const [, name] of ipairs(names)) {
            if (done.get(name) !== true) {
                done.set(name, true);
                const w = watched.get(name);
                const rev = revision(name);
                if (w === undefined || rev === undefined || rev !== w.rev) indexUpstream(name, now);
            }
        }
    }
    indexed = v;
}

function describe(eps: Endpoint[] | undefined): string {
    if (eps === undefined || eps.length === 0) return "(none)";
    const parts: string[] = [];
    for (const [i, e] of ipairs(eps)) {
        parts[i - 1] = e.port > 0 ? `${e.host}:${e.port}` : e.host;
    }
    return table.concat(parts, ",");
}

function logTransition(t: Transition, st: QueryState, before: Endpoint[] | undefined): void {
    if (t === "none") return;
    const staleTtl = getOptions().dns_stale_ttl;
    if (t === "resolved") {
        ngx.log(ngx.INFO, "dyups: dns: ", st.q, " resolved to ", describe(st.eps), " (ttl ", st.ttl, ")");
    } else if (t === "changed") {
        ngx.log(ngx.NOTICE, "dyups: dns: ", st.q, " changed from ", describe(before), " to ", describe(st.eps), " (ttl ", st.ttl, ")");
    } else if (t === "recovered") {
        ngx.log(ngx.NOTICE, "dyups: dns: ", st.q, " resolves again: ", describe(st.eps), " (ttl ", st.ttl, ")");
    } else if (t === "expired") {
        ngx.log(ngx.ERR, "dyups: dns: ", st.q, " still failing (", st.err, ") after dns_stale_ttl ", staleTtl,
            " s: dropped its stale addresses ", describe(before), "; servers using it are unavailable");
    } else if (st.stale !== undefined && st.expired !== true) {
        ngx.log(ngx.WARN, "dyups: dns: cannot resolve ", st.q, ": ", st.err, "; serving the last good addresses ",
            describe(st.eps), " for up to ", staleTtl, " s");
    } else {
        ngx.log(ngx.WARN, "dyups: dns: cannot resolve ", st.q, ": ", st.err, "; servers using it stay unavailable");
    }
}

/** Queries one name now and stores the outcome. Yields. */
function refreshKey(key: string, now: number): void {
    const kind = string.sub(key, 1, 4) === "srv:" ? "srv" : "a";
    const q = string.sub(key, kind === "srv" ? 5 : 3);
    const st = loadState(key) ?? newState(q, kind, now);
    const before = st.eps;
    const [eps, ttl, err] = kind === "srv" ? lookupSrv(q) : lookupA(q);
    ngx.update_time();
    const at = ngx.now();
    const lim = limits();
    const t = eps !== undefined ? onAnswer(st, eps, ttl, at, lim, math.random()) : onFailure(st, err as string, at, lim, math.random());
    logTransition(t, st, before);
    saveState(key, st, at);
    due.set(key, st.next);
    if (t === "resolved" || t === "changed" || t === "recovered" || t === "expired") {
        const u = users.get(key);
        if (u !== undefined) for (const [name] of pairs(u)) dirty.set(name, true);
    }
}

/** refused targets already logged, per "name#server" (a refusal is logged when it changes) */
const refusedLogged: LuaTable<string, string> = new LuaTable();

/** An answer without the addresses allowed_targets refuses (dyups.targets); each refusal logged once. */
function allowedTargets(name: string, i: number, eps: Endpoint[] | undefined): Endpoint[] | undefined {
    if (eps === undefined) return undefined;
    const [kept, why] = allowedOnly(eps);
    const key = `${name}#${i}`;
    if (why !== undefined && refusedLogged.get(key) !== why) {
        ngx.log(ngx.WARN, "dyups: dns: upstream ", name, " server ", i, ": refused an address of the answer: target ", why);
    }
    refusedLogged.set(key, why as string);
    return kept;
}

/**
 * Commits NAME's endpoints when its queries' answers differ from the record this worker routes by.
 * Returns false when the commit should be retried later (lock busy, dict full).
 */
function reconcile(name: string): boolean {
    const w = watched.get(name);
    const rec = w === undefined ? undefined : record(name);
    if (w === undefined || rec === undefined || rec.rev !== w.rev) return true; // the index catches up first
    const endpoints: Endpoint[][] = [];
    let changed = false;
    const states: LuaTable<string, QueryState | false> = new LuaTable();
    for (const [i, s] of ipairs(rec.spec.servers)) {
        const cur = rec.endpoints[i - 1] ?? [];
        let eps = cur;
        const key = w.keys.get(i);
        if (key !== undefined) {
            let st = states.get(key);
            if (st === undefined) {
                st = loadState(key) ?? false;
                states.set(key, st);
            }
            const fresh = allowedTargets(name, i, serverEndpoints(s, st === false ? undefined : st));
            if (fresh !== undefined && !sameEndpoints(fresh, cur)) {
                eps = fresh;
                changed = true;
            }
        }
        endpoints[i - 1] = eps;
    }
    if (!changed) return true;
    const nrec: UpstreamRecord = {
        name: rec.name, body: rec.body, spec: rec.spec, endpoints, rev: rec.rev, created: rec.created, source: "dns",
        display: rec.display, etcd: rec.etcd,
    };
    const [built] = tryBuild(nrec);
    if (built === undefined) return true; // a bug, logged at alert by tryBuild
    const [v, reason, status] = commit(name, nrec, rec.rev);
    if (v !== undefined) {
        ngx.log(ngx.NOTICE, "dyups: dns: upstream ", name, " has ", built.peers.total,
            " peers after a DNS change (version ", v, ")");
        auditWrite("update", name, rec.rev, v, DNS_SOURCE, nrec);
        releaseVanished(rec, nrec);
        return true;
    }
    if (status === 412) return true; // an interface write won; its revision gets indexed and recomputed
    if (status !== 409) ngx.log(ngx.ERR, "dyups: dns: cannot commit upstream ", name, ": ", reason);
    return false;
}

function writeNames(): void {
    const t: LuaTable<string, string[]> = new LuaTable();
    for (const [key, u] of pairs(users)) {
        const list: string[] = [];
        let n = 0;
        for (const [name] of pairs(u)) {
            n = n + 1;
            list[n - 1] = name;
        }
        table.sort(list);
        t.set(key, list);
    }
    writeQueryIndex(t);
    namesChanged = false;
}

/** One pass of the owner: index changes, query what is due, commit what changed. Yields. */
function work(now: number): void {
    if (appliedVersion() !== indexed) updateIndex(now);
    if (now >= nextDue) {
        const todo: string[] = [];
        let n = 0;
        for (const [key, at] of pairs(due)) {
            if (at <= now) {
                n = n + 1;
                todo[n - 1] = key;
            }
        }
        for (const [, key] of ipairs(todo)) {
            // a long pass re-checks its claim before every query: a worker that lost it stops
            if (!claim()) {
                isOwner = false;
                return;
            }
            if (due.get(key) !== undefined) refreshKey(key, now);
        }
        let m = math.huge;
        for (const [, at] of pairs(due)) if (at < m) m = at;
        nextDue = m;
    }
    if (next(dirty)[0] !== undefined && ngx.now() >= reconcileAfter) {
        const names: string[] = [];
        let n = 0;
        for (const [name] of pairs(dirty)) {
            n = n + 1;
            names[n - 1] = name;
        }
        for (const [, name] of ipairs(names)) {
            if (reconcile(name)) dirty.delete(name);
            else reconcileAfter = ngx.now() + 1;
        }
    }
    if (namesChanged) writeNames();
}

/**
 * The DNS part of the sync tick (timer phase, every worker, every sync_interval). Cheap unless this worker
 * owns the job and something is due. Errors inside a pass are logged here (the timer boundary).
 */
export function dnsTick(): void {
    const mine = claim();
    if (running) return; // a pass is under way in this worker (it re-checks the claim before each query)
    if (!mine) {
        if (isOwner) {
            isOwner = false;
            ngx.log(ngx.INFO, "dyups: dns: worker ", ngx.worker.pid(), " no longer resolves names");
        }
        return;
    }
    if (!isOwner) {
        isOwner = true;
        resetIndex();
        ngx.log(ngx.NOTICE, "dyups: dns: worker ", ngx.worker.id(), " (pid ", ngx.worker.pid(), ") resolves names now");
    }
    const now = ngx.now();
    if (appliedVersion() === indexed && now < nextDue && next(dirty)[0] === undefined && !namesChanged) return;
    running = true;
    const [ok, err] = pcall(work, now);
    running = false;
    if (!ok) ngx.log(ngx.ERR, "dyups: dns: refresh pass failed: ", err);
}
