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
import { buildPeerSet, PeerInit, PeerSet } from "./balance/peer_set";
import { attachChecks } from "./health/attach";
import { Endpoint, UpstreamRecord } from "./model";
import { getOptions } from "./options";
import { allNames, changedSince, decodeRecord, readRaw } from "./store/command_log";
import { CONNS_PREFIX, DOWN_PREFIX, FAILS_PREFIX, VERSION, WORKER_PREFIX } from "./store/keys";
import { shm } from "./store/shm";

/** A peer set plus the shm keys of each peer (precomputed: the hot path builds no strings). */
export interface Peers extends PeerSet {
    /** d:<id>, f:<id>, k:<id> per global peer index */
    dkeys: string[];
    fkeys: string[];
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

export interface UpstreamVersion {
    name: string;
    rev: number;
    /** spec.method, for the hot path */
    method: string;
    peers: Peers;
    /** hash KEY split into literal text and variable names (hash method only) */
    keyLits?: string[];
    keyVars?: string[];
    keyParts: number;
    /** requests holding this version */
    refs: number;
    retired: boolean;
}

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
let dict: NgxSharedDict | undefined;

/** The digest term of one upstream revision (see stateDigest in status.ts for the store's side). */
export function revisionHash(name: string, rev: number): number {
    return ngx.crc32_short(`${name}:${rev}`);
}

/** The shm id of an endpoint: "host:port", "[v6]:port", or the unix path. */
export function endpointId(e: Endpoint): string {
    if (e.port === 0 || string.sub(e.host, 1, 5) === "unix:") return e.host;
    if (string.find(e.host, ":", 1, true)[0] !== undefined) return `[${e.host}]:${e.port}`;
    return `${e.host}:${e.port}`;
}

/** Split "$request_uri" / "${arg_a}x$cookie_b" into literals and variable names, in order. */
function splitKey(key: string): LuaMultiReturn<[string[], string[], number]> {
    const lits: string[] = [];
    const vars: string[] = [];
    let n = 0;
    let pos = 1;
    const len = key.length;
    while (pos <= len) {
        const [s] = string.find(key, "$", pos, true);
        if (s === undefined) {
            n = n + 1;
            (lits as unknown as LuaTable<number, string>).set(n, string.sub(key, pos));
            (vars as unknown as LuaTable<number, string>).set(n, "");
            break;
        }
        let name: string | undefined;
        let after: number;
        if (string.sub(key, s + 1, s + 1) === "{") {
            const [e] = string.find(key, "}", s + 2, true);
            name = string.sub(key, s + 2, (e ?? len + 1) - 1);
            after = (e ?? len) + 1;
        } else {
            const [, e] = string.find(key, "^[%w_]+", s + 1);
            name = e !== undefined ? string.sub(key, s + 1, e) : "";
            after = (e ?? s) + 1;
        }
        n = n + 1;
        (lits as unknown as LuaTable<number, string>).set(n, string.sub(key, pos, s - 1));
        (vars as unknown as LuaTable<number, string>).set(n, name);
        pos = after;
    }
    return $multi(lits, vars, n);
}

/** Builds the immutable version of a record. O(endpoints) (+ the consistent-hash ring). */
export function buildVersion(rec: UpstreamRecord): UpstreamVersion {
    const spec = rec.spec;
    const inits: PeerInit[] = [];
    let n = 0;
    for (const [i, s] of ipairs(spec.servers)) {
        const eps = (rec.endpoints as unknown as LuaTable<number, Endpoint[]>).get(i);
        if (eps !== undefined) {
            for (const [, e] of ipairs(eps)) {
                n = n + 1;
                (inits as unknown as LuaTable<number, PeerInit>).set(n, {
                    id: endpointId(e),
                    server: s.addr,
                    host: e.host,
                    port: e.port,
                    weight: e.weight ?? s.weight,
                    maxFails: s.maxFails,
                    failTimeout: s.failTimeout,
                    maxConns: s.maxConns,
                    backup: s.backup,
                    down: s.down,
                });
            }
        }
    }
    const set = buildPeerSet(inits, {
        method: spec.method,
        hashConsistent: spec.hashConsistent === true,
        randomTwo: spec.randomTwo === true,
    }) as Peers;
    set.dkeys = [];
    set.fkeys = [];
    set.kkeys = [];
    let anyMaxFails = false;
    let anyMaxConns = false;
    for (let gi = 1; gi <= set.total; gi++) {
        const id = (set.ids as unknown as LuaTable<number, string>).get(gi);
        (set.dkeys as unknown as LuaTable<number, string>).set(gi, DOWN_PREFIX + id);
        (set.fkeys as unknown as LuaTable<number, string>).set(gi, FAILS_PREFIX + id);
        (set.kkeys as unknown as LuaTable<number, string>).set(gi, CONNS_PREFIX + id);
        if ((set.maxFails as unknown as LuaTable<number, number>).get(gi) > 0) anyMaxFails = true;
        if ((set.maxConns as unknown as LuaTable<number, number>).get(gi) > 0) anyMaxConns = true;
    }
    set.anyMaxFails = anyMaxFails;
    attachChecks(set, spec);
    set.trackConns = anyMaxConns || spec.method === "least_conn" || (spec.method === "random" && spec.randomTwo === true);
    const ver: UpstreamVersion = { name: rec.name, rev: rec.rev, method: spec.method, peers: set, keyParts: 0, refs: 0, retired: false };
    if (spec.method === "hash" && spec.hashKey !== undefined) {
        const [lits, vars, parts] = splitKey(spec.hashKey);
        ver.keyLits = lits;
        ver.keyVars = vars;
        ver.keyParts = parts;
    }
    return ver;
}

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

/** Builds a version; logs and returns undefined when that fails (a bug: records are validated before they are written). */
function build(name: string, rec: UpstreamRecord): UpstreamVersion | undefined {
    const [ok, ver] = pcall(buildVersion, rec);
    if (!ok) {
        ngx.log(ngx.ALERT, "dyups: cannot build upstream ", name, " revision ", rec.rev, ": ", ver);
        failed.set(name, rec.rev);
        return undefined;
    }
    return ver as UpstreamVersion;
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
    const rec = decodeRecord(name, raw);
    if (rec === undefined || rec.rev === oldRev) return;
    revs.set(name, rec.rev);
    digest = digest ^ revisionHash(name, rec.rev);
    if (oldRev !== undefined) digest = digest ^ revisionHash(name, oldRev);
    else upstreamCount = upstreamCount + 1;
    const inUse = byName.get(name) !== undefined;
    unlink(name);
    if (!inUse) return;
    const ver = build(name, rec);
    if (ver !== undefined) link(name, ver);
}

function rebuildAll(): void {
    const seen: LuaTable<string, boolean> = new LuaTable();
    for (const [, name] of ipairs(allNames())) {
        seen.set(name, true);
        applyName(name);
    }
    for (const [name, rev] of pairs(revs)) {
        if (seen.get(name) !== true) drop(name, rev);
    }
}

function publish(): void {
    const d = dict ?? shm();
    // "pid applied time digest retired luaKB": what GET /status shows per worker
    d.set(WORKER_PREFIX + ngx.worker.id(),
        `${ngx.worker.pid()} ${applied} ${ngx.now()} ${digest} ${retiredCount} ${math.floor(collectgarbage("count"))}`);
}

/** Catch up to version `v` (or to the current one). Returns how many names were applied. */
export function catchUp(v?: number): number {
    const d = dict ?? shm();
    dict = d;
    const target = v ?? (((d.get(VERSION)[0] as number | undefined) ?? 0));
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
    const d = dict ?? shm();
    dict = d;
    const [v] = d.get(VERSION);
    if (v !== undefined && v !== applied) catchUp(v as number);
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
    /** refs held on current versions, by name (only names with refs > 0) */
    refs: LuaTable<string, number>;
    retiredRefs: number;
}

export function stats(): RegistryStats {
    const refs: LuaTable<string, number> = new LuaTable();
    for (const [name, ver] of pairs(byName)) if (ver.refs > 0) refs.set(name, ver.refs);
    let rr = 0;
    for (const [ver] of pairs(retired)) rr = rr + ver.refs;
    return { applied, digest, upstreams: upstreamCount, built: builtCount, retired: retiredCount, refs, retiredRefs: rr };
}

/** Iterate the names of current upstreams with their revisions (status, DNS). */
export function eachName(): LuaIterable<LuaMultiReturn<[string, number]>> {
    return pairs(revs) as unknown as LuaIterable<LuaMultiReturn<[string, number]>>;
}
