/** @noSelfInFile */
// Building the immutable UpstreamVersion a worker routes by, from a stored record: its peer set (balance/),
// the per-peer shm keys (store/peer_health.ts), the parts of a `hash` (or `balancer ... key=`) key, and for
// `balancer ewma` the score snapshots other workers published (store/ewma.ts: one shm get per peer). A
// `balancer NAME` that cannot be used here is built as round robin and logged (checkBalancer decides the
// same question at apply time). Runs wherever a version is built: the registry's catch-up and lazy builds
// (any phase, balancer included) and the write pipeline's sandbox build. O(endpoints), plus the ring of
// `hash ... consistent`.
import { buildPeerSet } from "../balance/peer_set";
import { resolvePicker, setPickerWarning } from "../balance/pickers";
import type { PeerInit } from "../balance/types";
import type { Result } from "../errors";
import { Endpoint, UpstreamRecord, UpstreamSpec } from "../model";
import { attachChecks } from "../health/attach";
import { attachPeerKeys, entryIds, forgetEntries, Peers } from "../store/peer_health";
import type { VersionCounters } from "../metrics/counters";
import { seedEwma } from "../store/ewma";

function warnPicker(this: void, msg: string): void {
    ngx.log(ngx.ERR, "dyups: ", msg);
}
setPickerWarning(warnPicker);

export interface UpstreamVersion {
    name: string;
    rev: number;
    /** spec.method, for the hot path */
    method: string;
    peers: Peers;
    /** the upstream's `keepalive` (0: none), `keepalive_timeout` (seconds), `keepalive_requests` */
    keepalive: number;
    keepaliveTimeout: number;
    keepaliveRequests: number;
    /** hash KEY, or a balancer's key=, split into literal text and variable names (else keyParts 0) */
    keyLits?: string[];
    keyVars?: string[];
    keyParts: number;
    /** requests holding this version */
    refs: number;
    retired: boolean;
    /** this worker's metrics slots (metrics/counters.ts), attached at the version's first try */
    mc?: VersionCounters;
}

/** The id of an endpoint (keys its shared peer state): "host:port", "[v6]:port", or the unix path. */
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
            lits[n - 1] = string.sub(key, pos);
            vars[n - 1] = "";
            break;
        }
        let name: string;
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
        lits[n - 1] = string.sub(key, pos, s - 1);
        vars[n - 1] = name;
        pos = after;
    }
    return $multi(lits, vars, n);
}

/** The peers of a record, one per endpoint of each server directive, in body order. */
function peerInits(rec: UpstreamRecord): PeerInit[] {
    const inits: PeerInit[] = [];
    let n = 0;
    for (const [i, s] of ipairs(rec.spec.servers)) {
        const eps = rec.endpoints[i - 1];
        if (eps !== undefined) {
            for (const [, e] of ipairs(eps)) {
                n = n + 1;
                inits[n - 1] = {
                    id: endpointId(e),
                    server: s.addr,
                    host: e.host,
                    port: e.port,
                    weight: e.weight ?? s.weight,
                    maxFails: s.maxFails,
                    failTimeout: s.failTimeout,
                    maxConns: s.maxConns,
                    backup: s.backup,
                    down: s.down || s.drain === true, // drain: no new requests (those in flight keep their version)
                };
            }
        }
    }
    return inits;
}

/** The server entries of a record (store/peer_health.ts), in the peer set's order: primaries, then backups. */
export function recordEntries(rec: UpstreamRecord): string[] {
    const inits = peerInits(rec);
    const ids: string[] = [];
    for (let pass = 0; pass < 2; pass++) {
        for (const [, p] of ipairs(inits)) {
            if ((p.backup === true) === (pass === 1)) ids[ids.length] = p.id;
        }
    }
    return entryIds(rec.name, ids);
}

/**
 * After a write: releases the passive-health state of the server entries `before` had and `after` (undefined
 * for a delete) does not. Entries that remain keep their state. O(peers).
 */
export function releaseVanished(before: UpstreamRecord | undefined, after: UpstreamRecord | undefined): void {
    if (before === undefined) return;
    const keep: LuaTable<string, boolean> = new LuaTable();
    if (after !== undefined) for (const [, e] of ipairs(recordEntries(after))) keep.set(e, true);
    const gone: string[] = [];
    for (const [, e] of ipairs(recordEntries(before))) if (keep.get(e) !== true) gone[gone.length] = e;
    if (gone.length > 0) forgetEntries(gone);
}

/**
 * Apply time: a `balancer NAME [k=v ...]` is refused (the reason) when NAME is registered but refuses its
 * arguments, and when NAME is not registered in this Lua VM, unless `lenient`: bodies that reach this nginx
 * without a client to answer (init()'s upstream_conf and state file, which run before init_worker_by_lua
 * registrations; bodies from etcd, written by a node that has the picker) are then kept as written, with a
 * warning, and routed by round robin by any worker where NAME is not registered when it builds them
 * (buildVersion logs that at each build). Undefined for every other body.
 */
export function checkBalancer(name: string, spec: UpstreamSpec, lenient: boolean): string | undefined {
    if (spec.method !== "balancer") return undefined;
    const [p, reason, known] = resolvePicker(spec.picker ?? "", spec.pickerArgs);
    if (p !== undefined) return undefined;
    if (known === false && lenient) {
        ngx.log(ngx.WARN, "dyups: upstream ", name, ": ", reason, " yet: kept as written; a worker where it is not ",
            "registered when it builds the upstream routes it by round robin");
        return undefined;
    }
    return reason as string;
}

/**
 * Builds the immutable version of a validated record. O(endpoints) (+ the consistent-hash ring).
 * Contract: records are validated before they are written, so this cannot fail for one; a record that is
 * not valid is a caller's bug and raises (see tryBuild for the guarded form).
 */
export function buildVersion(rec: UpstreamRecord, sandbox?: boolean): UpstreamVersion {
    const spec = rec.spec;
    const inits = peerInits(rec);
    const set = buildPeerSet(inits, {
        method: spec.method,
        hashConsistent: spec.hashConsistent === true,
        randomTwo: spec.randomTwo === true,
        picker: spec.picker,
        pickerArgs: spec.pickerArgs,
    });
    if (set.pickerProblem !== undefined && sandbox !== true) {
        // a stored upstream whose `balancer` cannot be used in this worker (not registered in this nginx, or its
        // arguments refused where they were not checked: a start, etcd): kept as written, routed by round robin
        ngx.log(ngx.ERR, "dyups: upstream ", rec.name, " revision ", rec.rev, ": ", set.pickerProblem,
            "; routing it by round robin in this worker until the balancer can be used (a reload that registers it)");
    }
    // connections are counted where the method picks by them (least_conn, random two), where max_conns
    // limits them, and where a server is drained (the JSON API shows an operator when it is empty)
    let drained = false;
    for (const [, s] of ipairs(spec.servers)) if (s.drain === true) drained = true;
    const countConns = drained || spec.method === "least_conn" || (spec.method === "random" && spec.randomTwo === true);
    const peers = attachPeerKeys(set, rec.name, countConns);
    attachChecks(peers, spec);
    seedEwma(peers);
    const ver: UpstreamVersion = {
        name: rec.name, rev: rec.rev, method: spec.method, peers, keyParts: 0, refs: 0, retired: false,
        keepalive: spec.keepalive, keepaliveTimeout: spec.keepaliveTimeout, keepaliveRequests: spec.keepaliveRequests,
    };
    const key = spec.method === "hash" ? spec.hashKey : spec.pickerKey;
    if (key !== undefined) {
        const [lits, vars, parts] = splitKey(key);
        ver.keyLits = lits;
        ver.keyVars = vars;
        ver.keyParts = parts;
    }
    return ver;
}

/**
 * buildVersion behind a guard, for callers that must not raise (the balancer's lazy build, the catch-up, the
 * write pipeline's sandbox). A failure is a bug: it is logged at alert and returned as a reason.
 * `sandbox`: a trial build that is thrown away; it logs nothing about a picker this Lua VM lacks.
 */
export function tryBuild(rec: UpstreamRecord, sandbox?: boolean): Result<UpstreamVersion> {
    const [ok, ver] = pcall(buildVersion, rec, sandbox);
    if (ok) return $multi(ver, undefined);
    ngx.log(ngx.ALERT, "dyups: cannot build upstream ", rec.name, " revision ", rec.rev, " (a bug: the record was validated): ", ver);
    return $multi(undefined, `cannot build the peer set: ${tostring(ver)}`);
}
