/** @noSelfInFile */
// Applying one etcd revision of one upstream to this node's command log: the only way cluster mode changes
// local state (the writer applies its own write with it, the watcher every event and every difference found
// by a full read). From the command log on, workers converge exactly as in the embedded mode.
//
// Monotonic: the commit carries the guard of store/cluster.ts, so under the writers' lock an older etcd
// revision never replaces a newer one (STALE), and a deletion leaves a tombstone that refuses older puts.
// Bodies from etcd go through the same parser and validation as a POST, and the peer set is built in a
// sandbox before anything is written. Host names are resolved here, by this node: where they do not resolve,
// the upstream is still applied and the DNS timer of this node resolves them (a body that one node wrote
// must not be refused by another because of what its resolver says).
// Phases: content and timer (may sleep while the writers' lock is busy; may query DNS).
import * as cjson from "cjson.safe";
import { Result, StatusResult } from "../errors";
import { Endpoint, UpstreamRecord } from "../model";
import { parseBody, validateName } from "../parse/upstream";
import { resolveEndpoints } from "../dns/resolve";
import { checkBalancer, tryBuild } from "../registry/build";
import { canYield } from "../phase";
import { commit, readRaw } from "../store/command_log";
import { checkTargets } from "../targets";
import { auditWrite, CLUSTER_SOURCE } from "../audit";
import { recordWrite } from "../history";
import { etcdGuard, localRevision, STALE } from "../store/cluster";
import { StoredUpstream } from "./config";

/** What a commit attempt says: applied (true), already there or newer (false), or a failure with its status. */
export type Applied = StatusResult<boolean>;

/** How long an apply waits for a busy writers' lock before it gives up (seconds). */
const LOCK_PATIENCE = 10;

/** Decodes a value stored in etcd: [StoredUpstream] or [undefined, reason]. */
export function decodeStored(name: string, value: string): Result<StoredUpstream> {
    const [t] = cjson.decode(value);
    if (t === undefined || type(t) !== "table") return $multi(undefined, "the value in etcd is not JSON");
    const s = t as StoredUpstream;
    if (type(s.body) !== "string") return $multi(undefined, "the value in etcd has no body");
    if (s.name !== undefined && s.name !== name) return $multi(undefined, `the value in etcd names another upstream ("${tostring(s.name)}")`);
    return $multi(s, undefined);
}

/** A record for a body that came from etcd: parsed, validated, resolved where possible, built. */
export function prepareRemote(name: string, body: string): Result<UpstreamRecord> {
    const [lname, nerr] = validateName(name);
    if (lname === undefined || lname !== name) return $multi(undefined, `"${name}" is not a valid upstream name (${nerr ?? "not lowercase"})`);
    const [spec, perr] = parseBody(body);
    if (spec === undefined) return $multi(undefined, perr);
    // a balancer another node has and this one has not: kept, routed by round robin here (registry/build.ts)
    const picker = checkBalancer(name, spec, true);
    if (picker !== undefined) return $multi(undefined, picker);
    let [endpoints] = resolveEndpoints(spec, canYield());
    if (endpoints === undefined) [endpoints] = resolveEndpoints(spec, false); // unresolved names: the DNS timer's job
    if (endpoints === undefined) return $multi(undefined, "cannot resolve its servers");
    // this node's allowed_targets hold for what other nodes wrote too
    const terr = checkTargets(spec, endpoints as Endpoint[][]);
    if (terr !== undefined) return $multi(undefined, terr);
    const rec: UpstreamRecord = { name, body, spec, endpoints: endpoints as Endpoint[][], rev: 0, source: "etcd" };
    const [built, berr] = tryBuild(rec);
    if (built === undefined) return $multi(undefined, berr);
    return $multi(rec, undefined);
}

/**
 * Commits etcd revision `rev` of NAME: `rec` (a put) or undefined (a delete). `force` skips the revision
 * comparison (etcd's revisions went back: the watcher's full read). Returns true (applied), false
 * (this node already had that revision or a newer one, or a delete of a name it does not have), or
 * [undefined, reason, status] (429, 507, 500: it could not be applied here). `trace`: "audit" (an audit line
 * and a history entry, as a cluster write), "history" (the entry only: a node's first load), else nothing (the
 * writer's own commits: its pipeline audits them).
 */
export function applyRevision(name: string, rec: UpstreamRecord | undefined, rev: number, force?: boolean, trace?: "audit" | "history"): Applied {
    // the race between the writer and the watcher of this node usually ends here, without the writers' lock
    if (force !== true && localRevision(name, readRaw(name)) >= rev) return $multi(false, undefined, undefined);
    if (rec !== undefined) rec.etcd = rev;
    const guard = etcdGuard(name, rev, rec === undefined, force);
    const deadline = ngx.now() + LOCK_PATIENCE;
    for (;;) {
        const [v, reason, status, before] = commit(name, rec, undefined, guard);
        if (v !== undefined) {
            // another node's write (the watcher): audited and recorded in this node's history as a cluster write
            const op = rec === undefined ? "delete" : "update";
            if (trace === "audit") auditWrite(op, name, before, v, CLUSTER_SOURCE, rec);
            else if (trace === "history") pcall(recordWrite, op, name, before, v, CLUSTER_SOURCE, rec);
            return $multi(true, undefined, undefined);
        }
        if (status === STALE || (status === 404 && rec === undefined)) return $multi(false, undefined, undefined);
        if (status !== 409 || !canYield()) return $multi(undefined, reason as string, status as number);
        // the writers' lock is busy (trylock): our change is already decided in etcd, so wait for it
        ngx.update_time();
        if (ngx.now() > deadline) return $multi(undefined, "the writers' lock stayed busy", 409);
        ngx.sleep(0.005);
    }
}

/**
 * Applies a value read from etcd (a watch event or a full read). Same results as applyRevision, plus 400 for
 * a value this node rejects. `force`: see applyRevision. `quiet`: a history entry but no audit line (a node's
 * first read into an empty store is a load, as the state file at start: restored, not audited).
 */
export function applyValue(name: string, value: string | undefined, rev: number, force?: boolean, quiet?: boolean): Applied {
    const trace = quiet === true ? "history" : "audit";
    if (value === undefined) return applyRevision(name, undefined, rev, force, trace);
    const [stored, derr] = decodeStored(name, value);
    if (stored === undefined) return $multi(undefined, derr as string, 400);
    const [rec, perr] = prepareRemote(name, stored.body);
    if (rec === undefined) return $multi(undefined, perr as string, 400);
    return applyRevision(name, rec, rev, force, trace);
}
