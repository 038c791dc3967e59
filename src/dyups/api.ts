/** @noSelfInFile */
// The write and read pipeline behind both the HTTP interface and the Lua API.
// update: validate the name, parse + validate the body, resolve endpoints (non-blocking), build the peer set
// in a sandbox (exactly what every worker will build), and only then commit to the command log. Any failure
// before the commit changes nothing. After the commit this worker catches up at once; the others do on
// their next request (version gate) or timer tick.
// Statuses and messages are the original module's (200 "success", 404 "not found uptream", 409
// "wait and try again\n"), with 400 + the precise reason where the original gave 500 "add server failed".
import { Endpoint, UpstreamRecord } from "./model";
import { parseBody, validateName } from "./parse/upstream";
import { resolveEndpoints } from "./dns/resolve";
import { buildVersion, catchUp } from "./registry";
import { canYield, commit, namesInOrder, readRecord } from "./store/command_log";
import { getOptions } from "./options";
import { clusterRemove, clusterUpdate } from "./cluster/writer";

export const ADD_FAILED = "add server failed";

/** Builds the record a body describes, or [undefined, reason]. No side effects. */
export function prepare(name: string, body: string, source: string): LuaMultiReturn<[UpstreamRecord, undefined] | [undefined, string]> {
    const [spec, perr] = parseBody(body);
    if (spec === undefined) return $multi(undefined, perr);
    const [endpoints, rerr] = resolveEndpoints(spec, canYield());
    if (endpoints === undefined) return $multi(undefined, rerr);
    const rec: UpstreamRecord = { name, body, spec, endpoints: endpoints as Endpoint[][], rev: 0, source };
    const [ok, err] = pcall(buildVersion, rec);
    if (!ok) return $multi(undefined, `cannot build the peer set: ${err}`);
    return $multi(rec, undefined);
}

/**
 * Create or replace upstream NAME. Returns status, message: 200 "success"; 400 "add server failed: REASON";
 * 409 "wait and try again\n" (trylock); 412 (expectRev mismatch); 429 (max_upstreams); 507 (dict full).
 */
export function update(name: string, body: string, expectRev?: number, source?: string): LuaMultiReturn<[number, string, number?]> {
    const [lname, nerr] = validateName(name);
    if (lname === undefined) return $multi(400, `${ADD_FAILED}: ${nerr}`);
    const [rec, err] = prepare(lname, body, source ?? "api");
    if (rec === undefined) return $multi(400, `${ADD_FAILED}: ${err}`);
    if (getOptions().cluster !== undefined) {
        const [cs, cmsg, cv] = clusterUpdate(lname, rec, expectRev); // etcd first (cluster/writer.ts)
        return $multi(cs, cs === 200 || cs === 409 ? cmsg : `${ADD_FAILED}: ${cmsg}`, cv);
    }
    const [v, reason, status] = commit(lname, rec, expectRev);
    if (v === undefined) return $multi(status as number, status === 409 ? (reason as string) : `${ADD_FAILED}: ${reason}`);
    catchUp();
    return $multi(200, "success", v);
}

/** Delete upstream NAME: 200 "success", 404 "not found uptream", 409 "wait and try again\n". */
export function remove(name: string, expectRev?: number): LuaMultiReturn<[number, string, number?]> {
    const [lname] = validateName(name);
    if (lname === undefined) return $multi(404, "not found uptream");
    if (getOptions().cluster !== undefined) return clusterRemove(lname, expectRev);
    const [v, reason, status] = commit(lname, undefined, expectRev);
    if (v === undefined) return $multi(status as number, reason as string);
    catchUp();
    return $multi(200, "success", v);
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

/** Names of all upstreams, in creation order. */
export function list(): string[] {
    return namesInOrder();
}
