/** @noSelfInFile */
// etcd's v3 API through its JSON gateway (POST /v3/kv/range, /v3/kv/txn, /v3/watch, /v3/auth/authenticate),
// on the HTTP client of this folder. Keys and values travel base64-encoded; revisions are strings in JSON
// (int64) and are converted to numbers here.
//
// Endpoints and fail-over: each worker keeps the index of the endpoint it uses; a request that cannot connect
// moves on to the next endpoint at once (nothing was sent), until every endpoint was tried ("unreachable").
// A request that was sent and got no answer, or an answer that says etcd could not decide (no leader, leader
// changed, timed out), is "unknown": it may or may not have been applied, and the caller decides (writer.ts
// retries under its revision guard, which makes a retry safe). The endpoint is then rotated too, so the
// retry goes to another member.
// Auth: with user/password, a token per endpoint (etcd's default "simple" tokens are valid only on the member
// that issued them); a rejected token is renewed once per request.
// Phases: content and timer (cosockets). Owns no shm keys.
import * as cjson from "cjson.safe";
import { getOptions } from "../options";
import { ClusterConfig, EtcdEndpoint } from "./config";
import { HttpRequest, HttpStream, open, request } from "./http_client";

/** How a failure ended: see the header. */
export type FailKind = "unreachable" | "unknown" | "rejected" | "compacted" | "too large";
/**
 * A Result (errors.ts) with the kind of failure as a third value: whether etcd may have applied the request
 * decides what a writer may answer, and that is not an HTTP status yet.
 */
export type EtcdResult<T> = LuaMultiReturn<[T, undefined, undefined] | [undefined, string, FailKind]>;

export const CONNECT_TIMEOUT = 1000;
export const REQUEST_TIMEOUT = 5000;

/** A key-value pair as the gateway returns it, with revisions as numbers and the key decoded. */
export interface KeyValue {
    key: string;
    /** base64, decoded by the caller when needed */
    value?: string;
    mod_revision: number;
    create_revision: number;
}

let current = 1;
const tokens: LuaTable<string, string> = new LuaTable();

function config(): ClusterConfig {
    const c = getOptions().cluster;
    if (c === undefined) error("dyups: cluster mode is not configured", 2);
    return c;
}

/** The endpoint this worker uses now. */
export function currentEndpoint(): EtcdEndpoint {
    const eps = config().endpoints;
    if (current > eps.length) current = 1;
    return eps[current - 1];
}

/** Moves to the next endpoint (after a failure). */
export function rotate(): void {
    current = current % config().endpoints.length + 1;
}

export function b64(s: string): string {
    return ngx.encode_base64(s);
}

export function unb64(s: string | undefined): string {
    if (s === undefined) return "";
    return ngx.decode_base64(s) ?? "";
}

/** int64 as JSON string (or absent: 0) -> number */
export function num(v: unknown): number {
    if (v === undefined) return 0;
    return tonumber(v) ?? 0;
}

function post(ep: EtcdEndpoint, path: string, body: unknown, timeout: number, token?: string): LuaMultiReturn<[unknown, number, undefined] | [undefined, string, boolean]> {
    const [text] = cjson.encode(body);
    const headers: LuaTable<string, string> = new LuaTable();
    headers.set("Content-Type", "application/json");
    if (token !== undefined) headers.set("Authorization", token);
    const req: HttpRequest = { method: "POST", path, headers, body: text ?? "{}", connectTimeout: CONNECT_TIMEOUT, sendTimeout: timeout, readTimeout: timeout };
    const [res, err, sent] = request(ep, req);
    if (res === undefined) return $multi(undefined, err as string, sent as boolean);
    const [doc] = cjson.decode(res.body);
    if (doc === undefined || type(doc) !== "table") {
        return $multi(undefined, `etcd ${ep.name} answered ${res.status} with no JSON: ${string.sub(res.body, 1, 120)}`, true);
    }
    return $multi(doc, res.status, undefined);
}

interface GatewayError {
    error?: string;
    message?: string;
    code?: number;
}

/** Sorts a gateway error (gRPC code) into a FailKind. */
function classify(e: GatewayError): FailKind {
    const msg = e.message ?? e.error ?? "";
    if (string.find(msg, "compacted", 1, true)[0] !== undefined) return "compacted";
    // etcd's --max-request-bytes (raft) or its gRPC message limit
    if (string.find(msg, "too large", 1, true)[0] !== undefined || string.find(msg, "larger than max", 1, true)[0] !== undefined) return "too large";
    const code = e.code ?? 2;
    // 3 invalid argument, 5 not found, 6 exists, 7 permission denied, 8 exhausted (no space), 9 precondition,
    // 11 out of range, 16 unauthenticated: etcd decided; a retry cannot help
    if (code === 3 || code === 5 || code === 6 || code === 7 || code === 8 || code === 9 || code === 11 || code === 16) return "rejected";
    return "unknown";
}

function authenticate(ep: EtcdEndpoint): EtcdResult<string> {
    const c = config();
    const [doc, status, sent] = post(ep, "/v3/auth/authenticate", { name: c.user, password: c.password }, REQUEST_TIMEOUT);
    if (doc === undefined) return $multi(undefined, tostring(status), sent === true ? "unknown" : "unreachable");
    const d = doc as { token?: string } & GatewayError;
    if (status !== 200 || type(d.token) !== "string") {
        return $multi(undefined, `authentication as "${c.user}" failed at ${ep.name}: ${d.message ?? d.error ?? `status ${status}`}`, "rejected");
    }
    tokens.set(ep.name, d.token as string);
    return $multi(d.token as string, undefined, undefined);
}

/** The endpoint's auth token: the cached one, else a new one (authenticate caches it). */
function tokenOf(ep: EtcdEndpoint): EtcdResult<string> {
    const t = tokens.get(ep.name);
    if (t !== undefined) return $multi(t, undefined, undefined);
    return authenticate(ep);
}

/** One call on one endpoint, with auth. [doc] or [undefined, reason, kind]. */
function callOn(ep: EtcdEndpoint, path: string, body: unknown, timeout: number): EtcdResult<LuaTable<string, unknown>> {
    const c = config();
    for (let attempt = 1; attempt <= 2; attempt++) {
        let token: string | undefined;
        if (c.user !== undefined) {
            const [t, aerr, akind] = tokenOf(ep);
            if (t === undefined) return $multi(undefined, aerr as string, akind as FailKind);
            token = t;
        }
        const [doc, status, sent] = post(ep, path, body, timeout, token);
        if (doc === undefined) return $multi(undefined, tostring(status), sent === true ? "unknown" : "unreachable");
        if (status === 200) return $multi(doc as LuaTable<string, unknown>, undefined, undefined);
        const e = doc as GatewayError;
        const msg = e.message ?? e.error ?? `status ${status}`;
        if (c.user !== undefined && attempt === 1 && (e.code === 16 || string.find(msg, "token", 1, true)[0] !== undefined)) {
            tokens.delete(ep.name); // expired, or issued by another member: once more with a new one
        } else {
            return $multi(undefined, `etcd ${ep.name}: ${msg}`, classify(e));
        }
    }
    return $multi(undefined, `etcd ${ep.name}: the auth token was refused twice`, "rejected");
}

/**
 * One API call with fail-over: endpoints that refuse the connection are skipped (in order, from the current
 * one). Returns the decoded answer, or [undefined, reason, kind].
 */
export function call(path: string, body: unknown, timeout?: number): EtcdResult<LuaTable<string, unknown>> {
    const eps = config().endpoints;
    const reasons: string[] = [];
    for (let i = 1; i <= eps.length; i++) {
        const ep = currentEndpoint();
        const [doc, err, kind] = callOn(ep, path, body, timeout ?? REQUEST_TIMEOUT);
        if (doc !== undefined) return $multi(doc, undefined, undefined);
        if (kind !== "unreachable") {
            if (kind === "unknown") rotate();
            return $multi(undefined, err as string, kind as FailKind);
        }
        reasons[i - 1] = err as string;
        rotate();
    }
    return $multi(undefined, `etcd is unreachable (${table.concat(reasons, "; ")})`, "unreachable");
}

/** The same, on one endpoint only (the watcher checks the member its watch is on). */
export function callEndpoint(ep: EtcdEndpoint, path: string, body: unknown, timeout?: number): EtcdResult<LuaTable<string, unknown>> {
    return callOn(ep, path, body, timeout ?? REQUEST_TIMEOUT);
}

/** The header revision of an answer (0 when absent). */
export function headerRevision(doc: LuaTable<string, unknown>): number {
    const h = doc.get("header") as { revision?: string } | undefined;
    return h === undefined ? 0 : num(h.revision);
}

export function toKeyValue(raw: { key?: string; value?: string; mod_revision?: string; create_revision?: string }): KeyValue {
    return { key: unb64(raw.key), value: raw.value, mod_revision: num(raw.mod_revision), create_revision: num(raw.create_revision) };
}

/** Number of keys per page of a full read. */
export const PAGE = 1000;

/** A full read: the pairs (key order), the revision they were read at, and the etcd cluster's id. */
export interface Snapshot {
    kvs: KeyValue[];
    revision: number;
    clusterId: string;
}

/** Every key in [key, rangeEnd) at one revision, in pages (the gateway's answers stay small). */
export function rangeAll(key: string, rangeEnd: string): EtcdResult<Snapshot> {
    const out: KeyValue[] = [];
    let n = 0;
    let rev = 0;
    let clusterId = "";
    let from = key;
    for (;;) {
        const req: LuaTable<string, unknown> = new LuaTable();
        req.set("key", b64(from));
        req.set("range_end", b64(rangeEnd));
        req.set("limit", PAGE);
        if (rev > 0) req.set("revision", `${rev}`);
        const [doc, err, kind] = call("/v3/kv/range", req);
        if (doc === undefined) return $multi(undefined, err as string, kind as FailKind);
        if (rev === 0) {
            rev = headerRevision(doc);
            const h = doc.get("header") as { cluster_id?: string } | undefined;
            clusterId = h !== undefined ? tostring(h.cluster_id ?? "") : "";
        }
        const kvs = doc.get("kvs") as unknown[] | undefined;
        let last: string | undefined;
        if (kvs !== undefined) {
            for (const [, raw] of ipairs(kvs)) {
                const kv = toKeyValue(raw as { key?: string });
                n = n + 1;
                out[n - 1] = kv;
                last = kv.key;
            }
        }
        if (doc.get("more") !== true || last === undefined) break;
        from = last + "\0";
    }
    return $multi({ kvs: out, revision: rev, clusterId }, undefined, undefined);
}

/** Opens a watch of [key, rangeEnd) from `startRevision` on endpoint `ep`. The stream carries one JSON answer per line. */
export function openWatch(ep: EtcdEndpoint, key: string, rangeEnd: string, startRevision: number): EtcdResult<HttpStream> {
    const c = config();
    let token: string | undefined;
    if (c.user !== undefined) {
        const [t, aerr, akind] = tokenOf(ep);
        if (t === undefined) return $multi(undefined, aerr as string, akind as FailKind);
        token = t;
    }
    const headers: LuaTable<string, string> = new LuaTable();
    headers.set("Content-Type", "application/json");
    // clientv3's WithRequireLeader: the member ends the watch when it loses its leader, instead of going quiet
    headers.set("Grpc-Metadata-Hasleader", "true");
    if (token !== undefined) headers.set("Authorization", token);
    const [text] = cjson.encode({ create_request: { key: b64(key), range_end: b64(rangeEnd), start_revision: `${startRevision}` } });
    const [s, err, sent] = open(ep, {
        method: "POST", path: "/v3/watch", headers, body: text, connectTimeout: CONNECT_TIMEOUT, sendTimeout: REQUEST_TIMEOUT,
        readTimeout: REQUEST_TIMEOUT,
    });
    if (s === undefined) return $multi(undefined, err as string, sent === true ? "unknown" : "unreachable");
    if (s.status !== 200) {
        if (c.user !== undefined) tokens.delete(ep.name);
        return $multi(undefined, `etcd ${ep.name} refused the watch (status ${s.status})`, "unknown");
    }
    return $multi(s, undefined, undefined);
}

/** Forgets the auth token of an endpoint (a watch refused for its token). */
export function dropToken(ep: EtcdEndpoint): void {
    tokens.delete(ep.name);
}
