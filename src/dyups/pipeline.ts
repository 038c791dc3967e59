/** @noSelfInFile */
// The write pipeline behind the HTTP interface, the Lua API, upstream_conf and the state file:
//   update: validate the name, parse + validate the body, resolve endpoints (non-blocking where the phase
//   allows), check them against the allowed targets (targets.ts), build the peer set in a sandbox (exactly
//   what every worker will build), and only then commit to the command log. Any failure before the commit
//   changes nothing. An accepted write is audited (audit.ts) with the source its caller passed (the
//   interface's admitted client and token name, or the Lua API). After the commit this worker catches up at
//   once; the others do on their next request (version gate) or timer tick.
// Contract: every function returns a StatusResult: the new version, or [undefined, reason, status] with the
// original module's messages (404 "not found uptream", 409 "wait and try again\n") and 400
// "add server failed: REASON" where the original gave 500 "add server failed". The callers (interface,
// Lua API) turn it into their own answer.
import { auditWrite, LUA_SOURCE, WriteSource } from "./audit";
import type { Result, StatusResult } from "./errors";
import { Endpoint, UpstreamRecord } from "./model";
import { parseBody, validateName } from "./parse/upstream";
import { canYield } from "./phase";
import { resolveEndpoints } from "./dns/resolve";
import { healthFits } from "./health/capacity";
import { checkBalancer, releaseVanished, tryBuild } from "./registry/build";
import * as order from "./registry/order";
import { catchUp, sync } from "./registry/sync";
import { stateWritable } from "./state/save";
import { commit, readRecord } from "./store/command_log";
import { checkTargets } from "./targets";
import { noteWrite } from "./metrics/hooks";
import { getOptions } from "./options";
import { clusterRemove, clusterUpdate } from "./cluster/writer";

export const ADD_FAILED = "add server failed";

/**
 * Builds the record a body describes, or [undefined, reason]. No side effects. A `balancer NAME` must be
 * registered in this Lua VM and take its arguments (checkBalancer); `atStart` (init(): upstream_conf, the state
 * file) accepts a NAME not registered yet, which may be registered after init() (see checkBalancer).
 */
export function prepare(name: string, body: string, source: string, atStart?: boolean): Result<UpstreamRecord> {
    const [spec, perr] = parseBody(body);
    if (spec === undefined) return $multi(undefined, perr);
    const berr = checkBalancer(name, spec, atStart === true);
    if (berr !== undefined) return $multi(undefined, berr);
    const [endpoints, rerr] = resolveEndpoints(spec, canYield());
    if (endpoints === undefined) return $multi(undefined, rerr);
    const terr = checkTargets(spec, endpoints as Endpoint[][]);
    if (terr !== undefined) return $multi(undefined, terr);
    const rec: UpstreamRecord = { name, body, spec, endpoints: endpoints as Endpoint[][], rev: 0, source };
    return $multi(rec, undefined);
}

/**
 * state_file_strict: undefined when writes may go on, else the 503 reason (the state cannot be saved). Not in
 * cluster mode: etcd holds the state there, the state file is this node's copy.
 */
function unsaved(): string | undefined {
    if (!getOptions().state_file_strict) return undefined;
    const [ok, why] = stateWritable();
    return ok ? undefined : `cannot save the state: ${why}; nothing was changed (state_file_strict)`;
}

/**
 * Create or replace upstream NAME (listed as spelled here). `source` says who asks (the audit line; default
 * the Lua API). Returns the new version, or [undefined, reason, status]: 400 "add server failed: REASON";
 * 409 "wait and try again\n" (lock busy); 412 (expectRev mismatch); 429 (max_upstreams); 503
 * (state_file_strict: the state cannot be saved); 507 (the dict's budget, or the dict, is full); 500 (a bug:
 * the sandbox build failed; logged at alert).
 */
export function update(name: string, body: string, expectRev?: number, source?: WriteSource): StatusResult<number> {
    const [v, reason, status] = applyUpdate(name, body, expectRev, source);
    noteWrite(v !== undefined ? 200 : status);
    return $multi(v, reason, status) as StatusResult<number>;
}

function applyUpdate(name: string, body: string, expectRev?: number, source?: WriteSource): StatusResult<number> {
    const [lname, nerr] = validateName(name);
    if (lname === undefined) return $multi(undefined, `${ADD_FAILED}: ${nerr}`, 400);
    const [rec, err] = prepare(lname, body, "api");
    if (rec === undefined) return $multi(undefined, `${ADD_FAILED}: ${err}`, 400);
    if (name !== lname) rec.display = name;
    const [ver, berr] = tryBuild(rec);
    if (ver === undefined) return $multi(undefined, `${ADD_FAILED}: ${berr}`, 500);
    const [fits, ferr] = healthFits(rec); // active checks: the peers' states must fit in the dict
    if (fits === undefined) return $multi(undefined, `${ADD_FAILED}: ${ferr}`, 507);
    const old = readRecord(lname);
    if (getOptions().cluster !== undefined) {
        // cluster mode: etcd first (cluster/writer.ts), then this node applies it before answering
        const [cs, cmsg, cv] = clusterUpdate(lname, rec, expectRev);
        if (cs !== 200) return $multi(undefined, cs === 409 ? cmsg : `${ADD_FAILED}: ${cmsg}`, cs);
        auditWrite("update", lname, old !== undefined ? revisionOf(old) : 0, cv as number, source ?? LUA_SOURCE, rec);
        releaseVanished(old, rec);
        return $multi(cv as number, undefined, undefined);
    }
    const why = unsaved();
    if (why !== undefined) return $multi(undefined, `${ADD_FAILED}: ${why}`, 503);
    const [v, reason, status, before] = commit(lname, rec, expectRev);
    if (v === undefined) return $multi(undefined, status === 409 ? reason : `${ADD_FAILED}: ${reason}`, status);
    auditWrite("update", lname, before, v, source ?? LUA_SOURCE, rec);
    releaseVanished(old, rec);
    catchUp();
    return $multi(v, undefined, undefined);
}

/** Delete upstream NAME: the new version, or 404 "not found uptream", 409 "wait and try again\n", 412, 503. */
export function remove(name: string, expectRev?: number, source?: WriteSource): StatusResult<number> {
    const [v, reason, status] = applyRemove(name, expectRev, source);
    noteWrite(v !== undefined ? 200 : status);
    return $multi(v, reason, status) as StatusResult<number>;
}

function applyRemove(name: string, expectRev?: number, source?: WriteSource): StatusResult<number> {
    const [lname] = validateName(name);
    if (lname === undefined) return $multi(undefined, "not found uptream", 404);
    const old = readRecord(lname);
    if (getOptions().cluster !== undefined) {
        const [cs, cmsg, cv] = clusterRemove(lname, expectRev);
        if (cs !== 200) return $multi(undefined, cmsg, cs);
        auditWrite("delete", lname, old !== undefined ? revisionOf(old) : 0, cv as number, source ?? LUA_SOURCE);
        releaseVanished(old, undefined);
        return $multi(cv as number, undefined, undefined);
    }
    const why = unsaved();
    if (why !== undefined) return $multi(undefined, why, 503);
    const [v, reason, status, before] = commit(lname, undefined, expectRev);
    if (v === undefined) return $multi(undefined, reason, status);
    auditWrite("delete", lname, before, v, source ?? LUA_SOURCE);
    releaseVanished(old, undefined);
    catchUp();
    return $multi(v, undefined, undefined);
}

/** The revision clients see (ETag, If-Match): the etcd revision in cluster mode, else the command log's. */
export function revisionOf(rec: UpstreamRecord): number {
    return getOptions().cluster !== undefined ? (rec.etcd ?? 0) : rec.rev;
}

/** The stored record of NAME (any case), or undefined. */
export function get(name: string): UpstreamRecord | undefined {
    const [lname] = validateName(name);
    if (lname === undefined) return undefined;
    return readRecord(lname);
}

/** Names of all upstreams, in creation order, each spelled as its latest POST spelled it (this worker's registry, caught up first). O(n). */
export function list(): string[] {
    sync();
    return order.all(true);
}
