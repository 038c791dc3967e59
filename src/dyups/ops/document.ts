/** @noSelfInFile */
// The JSON API's documents: an upstream as JSON (servers with their parameters, method, keepalive, check) and
// back. Pure: no ngx.*, no shm (the HTTP layer adds run-time figures: connections, health).
//
// Output: upstreamDoc / serverDoc / checkDoc turn a stored record's spec into documents (snake_case names,
// times in seconds, flags as booleans). Input: parseUpstreamDoc / parseServerDoc / patchServer check a decoded
// JSON value field by field (types, ranges, unknown fields) and give a draft spec (parse/render.ts's
// RenderSpec). The draft is only a first filter with clear messages: every write renders it to a body and
// sends that through the same parser and validation as a POST (ops/edit.ts), which stays the one authority.
// An empty array and an empty object are told apart (the decoder marks arrays). Fields that GET adds and that a client cannot set (name, revision, body; a server's resolved, active,
// health) are accepted and ignored, so a GET document can be edited and PUT back.
// Error contract: [value] or [undefined, reason]; a reason names the field and where it is
// ("\"weight\" must be an integer in [1, 2147483647] in server 2"). Never raises for any decoded value.
import type { CheckSpec, Method, UpstreamRecord, UpstreamSpec } from "../model";
import type { Result } from "../errors";
import { MAX_SERVERS } from "../parse/upstream";
import type { RenderServer, RenderSpec } from "../parse/render";
import { isJsonArray, JSON_NULL, jsonArray } from "./json";

const MAX_INT = 2147483647;
const floor = math.floor;
const find = string.find;

type Obj = LuaTable<AnyNotNil, unknown>;
type Doc = Record<string, unknown>;

// ---------------------------------------------------------------------------------------------------------
// Output

export function checkDoc(c: CheckSpec): Doc {
    let expect: string[] | undefined;
    if (c.expectAlive !== undefined) {
        expect = jsonArray<string>();
        for (const [i, e] of ipairs(c.expectAlive)) expect[i - 1] = e;
    }
    return {
        type: c.type, interval: c.interval, rise: c.rise, fall: c.fall, timeout: c.timeout, default_down: c.defaultDown,
        port: c.port, http_send: c.httpSend, expect_alive: expect,
        keepalive_requests: c.keepaliveRequests,
    };
}

/** A server's settings (what a client can set). */
export function serverDoc(s: RenderServer): Doc {
    return {
        server: s.addr, weight: s.weight, max_fails: s.maxFails, fail_timeout: s.failTimeout, max_conns: s.maxConns,
        backup: s.backup, down: s.down, drain: s.drain === true, resolve: s.resolve, service: s.service,
    };
}

/** The upstream-wide settings (everything but the servers), as the document names them. */
export function settingsDoc(spec: RenderSpec): Doc {
    return {
        method: spec.method,
        hash_key: spec.method === "hash" ? spec.hashKey : undefined,
        hash_consistent: spec.method === "hash" ? spec.hashConsistent : undefined,
        random_two: spec.method === "random" ? spec.randomTwo : undefined,
        keepalive: spec.keepalive, keepalive_timeout: spec.keepaliveTimeout, keepalive_requests: spec.keepaliveRequests,
        zone: spec.zone,
        check: spec.check !== undefined ? checkDoc(spec.check) : undefined,
    };
}

/** The document of a stored upstream, without run-time figures (the caller adds them per server). */
export function upstreamDoc(rec: UpstreamRecord): Doc {
    const doc = settingsDoc(rec.spec);
    doc.name = rec.display ?? rec.name;
    doc.revision = rec.rev;
    doc.body = rec.body;
    const servers = jsonArray<Doc>();
    for (const [i, s] of ipairs(rec.spec.servers)) servers[i - 1] = serverDoc(s);
    doc.servers = servers;
    return doc;
}

/** A copy of a server's settings. */
export function copyServer(s: RenderServer): RenderServer {
    return {
        addr: s.addr, weight: s.weight, maxFails: s.maxFails, failTimeout: s.failTimeout, maxConns: s.maxConns,
        backup: s.backup, down: s.down, drain: s.drain, resolve: s.resolve, service: s.service,
    };
}

/** A copy of a spec as a draft the JSON API may edit (servers copied one level deep). */
export function draftOf(spec: UpstreamSpec): RenderSpec {
    const servers: RenderServer[] = [];
    for (const [i, s] of ipairs(spec.servers)) servers[i - 1] = copyServer(s);
    return {
        servers, method: spec.method, hashKey: spec.hashKey, hashConsistent: spec.hashConsistent, randomTwo: spec.randomTwo,
        keepalive: spec.keepalive, keepaliveTimeout: spec.keepaliveTimeout, keepaliveRequests: spec.keepaliveRequests,
        zone: spec.zone, check: spec.check,
    };
}

// ---------------------------------------------------------------------------------------------------------
// Input: field checks

function isTable(v: unknown): v is Obj {
    return type(v) === "table";
}

/** A JSON object (as decoded by ops/json.ts: a table not marked as an array). */
function isObject(v: unknown): v is Obj {
    return isTable(v) && !isJsonArray(v);
}

/** A JSON array (marked by the decoder). */
function isArray(v: unknown): v is Obj {
    return isTable(v) && isJsonArray(v);
}

function describe(v: unknown): string {
    if (v === JSON_NULL) return "null";
    const t = type(v);
    if (t === "table") return isArray(v) ? "an array" : "an object";
    if (t === "number") return (v as number) !== (v as number) || v === math.huge || v === -math.huge ? "a non-finite number" : "a number";
    if (t === "string") return "a string";
    if (t === "boolean") return "a boolean";
    return t;
}

function isInt(v: unknown, min: number, max: number): boolean {
    if (type(v) !== "number") return false;
    const n = v as number;
    return n === n && floor(n) === n && n >= min && n <= max;
}

// The checks below set `out` and return undefined, or return the reason (the parser's Problem shape).
let outNum = 0;
let outStr = "";
let outBool = false;

function intField(v: unknown, name: string, where: string, min: number, max: number): string | undefined {
    if (!isInt(v, min, max)) return `"${name}" must be an integer in [${min}, ${max}]${where}, got ${describe(v)}`;
    outNum = v as number;
    return undefined;
}

function secondsField(v: unknown, name: string, where: string): string | undefined {
    const n = v as number;
    if (type(v) !== "number" || n !== n || n < 0 || n > MAX_INT) {
        return `"${name}" must be a number of seconds in [0, ${MAX_INT}]${where}, got ${describe(v)}`;
    }
    const ms = floor(n * 1000 + 0.5);
    if (math.abs(ms - n * 1000) > 1e-6) return `"${name}" must have at most 3 decimals (milliseconds)${where}`;
    outNum = ms / 1000;
    return undefined;
}

function boolField(v: unknown, name: string, where: string): string | undefined {
    if (type(v) !== "boolean") return `"${name}" must be true or false${where}, got ${describe(v)}`;
    outBool = v as boolean;
    return undefined;
}

/** A string of 1..max bytes; control characters refused unless `controls` (then only \t \r \n). */
function stringField(v: unknown, name: string, where: string, max: number, controls: boolean, empty: boolean): string | undefined {
    if (type(v) !== "string") return `"${name}" must be a string${where}, got ${describe(v)}`;
    const s = v as string;
    if (s.length > max) return `"${name}" is too long (${s.length} bytes, max ${max})${where}`;
    if (!empty && s.length === 0) return `"${name}" must not be empty${where}`;
    let bad: number | undefined;
    if (controls) bad = find(s, "[%z\x01-\x08\x0b\x0c\x0e-\x1f\x7f]")[0];
    else bad = find(s, "%c")[0];
    if (bad !== undefined) return `"${name}" must not contain control characters${where}`;
    outStr = s;
    return undefined;
}

function unknownField(k: unknown, where: string): string {
    return `unknown field "${string.sub(tostring(k), 1, 64)}"${where}`;
}

const SERVER_READ_ONLY = new LuaTable<string, boolean>();
SERVER_READ_ONLY.set("resolved", true);
SERVER_READ_ONLY.set("active", true);
SERVER_READ_ONLY.set("health", true);

const UPSTREAM_READ_ONLY = new LuaTable<string, boolean>();
UPSTREAM_READ_ONLY.set("name", true);
UPSTREAM_READ_ONLY.set("revision", true);
UPSTREAM_READ_ONLY.set("body", true);

/** The defaults of a server that a document does not mention (nginx's). */
export function defaultServer(addr: string): RenderServer {
    return { addr, weight: 1, maxFails: 1, failTimeout: 10, maxConns: 0, backup: false, down: false, resolve: false };
}

/**
 * Applies a server document's fields to `s` (modified in place). `fixedAddr`: the "server" field may only
 * repeat it (PATCH of that server); otherwise "server" sets the address. Returns a reason or undefined.
 */
function serverFields(o: Obj, s: RenderServer, where: string, fixedAddr: string | undefined): string | undefined {
    for (const [k, v] of pairs(o)) {
        let err: string | undefined;
        if (k === "server") {
            err = stringField(v, "server", where, 1024, false, false);
            if (err === undefined) {
                if (fixedAddr !== undefined && outStr !== fixedAddr) {
                    err = `"server" cannot be changed (it names the server: "${fixedAddr}"); remove the server and add the new one`;
                } else s.addr = outStr;
            }
        } else if (k === "weight") {
            err = intField(v, "weight", where, 1, MAX_INT);
            if (err === undefined) s.weight = outNum;
        } else if (k === "max_fails") {
            err = intField(v, "max_fails", where, 0, MAX_INT);
            if (err === undefined) s.maxFails = outNum;
        } else if (k === "fail_timeout") {
            err = secondsField(v, "fail_timeout", where);
            if (err === undefined) s.failTimeout = outNum;
        } else if (k === "max_conns") {
            err = intField(v, "max_conns", where, 0, MAX_INT);
            if (err === undefined) s.maxConns = outNum;
        } else if (k === "backup" || k === "down" || k === "drain" || k === "resolve") {
            err = boolField(v, k, where);
            if (err === undefined) {
                if (k === "backup") s.backup = outBool;
                else if (k === "down") s.down = outBool;
                else if (k === "drain") s.drain = outBool ? true : undefined;
                else s.resolve = outBool;
            }
        } else if (k === "service") {
            if (v === JSON_NULL) s.service = undefined;
            else {
                err = stringField(v, "service", where, 255, false, false);
                if (err === undefined) s.service = outStr;
            }
        } else if (type(k) !== "string" || SERVER_READ_ONLY.get(k as string) !== true) {
            err = unknownField(k, where);
        }
        if (err !== undefined) return err;
    }
    return undefined;
}

/** A server document for a new server (POST .../servers, or one element of a PUT's servers). */
export function parseServerDoc(v: unknown, where: string): Result<RenderServer> {
    if (!isObject(v)) return $multi(undefined, `a server must be a JSON object${where}, got ${describe(v)}`);
    if (v.get("server") === undefined) return $multi(undefined, `"server" (the address, as in a body: "10.0.0.1:8080") is required${where}`);
    const s = defaultServer("");
    const err = serverFields(v, s, where, undefined);
    if (err !== undefined) return $multi(undefined, err);
    return $multi(s, undefined);
}

/** A PATCH of server `cur`: a copy with the document's fields applied. */
export function patchServer(cur: RenderServer, v: unknown): Result<RenderServer> {
    if (!isObject(v)) return $multi(undefined, `a server change must be a JSON object, got ${describe(v)}`);
    if (next(v)[0] === undefined) return $multi(undefined, "nothing to change: give weight, max_fails, fail_timeout, max_conns, backup, down, drain, resolve or service");
    const s = copyServer(cur);
    const err = serverFields(v, s, "", cur.addr);
    if (err !== undefined) return $multi(undefined, err);
    return $multi(s, undefined);
}

const CHECK_TYPES = new LuaTable<string, CheckSpec["type"]>();
for (const t of ["tcp", "http", "ssl_hello", "mysql", "ajp"] as const) CHECK_TYPES.set(t, t);
const EXPECT = new LuaTable<string, boolean>();
for (const e of ["http_2xx", "http_3xx", "http_4xx", "http_5xx"]) EXPECT.set(e, true);
const METHODS = new LuaTable<string, Method>();
for (const m of ["round_robin", "least_conn", "ip_hash", "hash", "random"] as const) METHODS.set(m, m);

function parseCheck(v: unknown): Result<CheckSpec> {
    const where = " in check";
    if (!isObject(v)) return $multi(undefined, `"check" must be an object or null, got ${describe(v)}`);
    const c: CheckSpec = { type: "tcp", interval: 30000, rise: 2, fall: 5, timeout: 1000, defaultDown: true, port: 0 };
    for (const [k, x] of pairs(v)) {
        let err: string | undefined;
        if (k === "type") {
            const t = type(x) === "string" ? CHECK_TYPES.get(x as string) : undefined;
            if (t === undefined) err = `"type" must be one of tcp, http, ssl_hello, mysql, ajp${where}`;
            else c.type = t;
        } else if (k === "interval" || k === "rise" || k === "fall" || k === "timeout") {
            err = intField(x, k, where, 1, MAX_INT);
            if (err === undefined) {
                if (k === "interval") c.interval = outNum;
                else if (k === "rise") c.rise = outNum;
                else if (k === "fall") c.fall = outNum;
                else c.timeout = outNum;
            }
        } else if (k === "default_down") {
            err = boolField(x, k, where);
            if (err === undefined) c.defaultDown = outBool;
        } else if (k === "port") {
            err = intField(x, k, where, 0, 65535);
            if (err === undefined) c.port = outNum;
        } else if (k === "http_send") {
            err = stringField(x, k, where, 65536, true, true);
            if (err === undefined) c.httpSend = outStr;
        } else if (k === "keepalive_requests") {
            err = intField(x, k, where, 1, MAX_INT);
            if (err === undefined) c.keepaliveRequests = outNum;
        } else if (k === "expect_alive") {
            if (!isArray(x) || x.length() === 0) err = `"expect_alive" must be a non-empty array of http_2xx, http_3xx, http_4xx, http_5xx${where}`;
            else {
                const list: string[] = [];
                for (let i = 1; i <= x.length() && err === undefined; i++) {
                    const e = x.get(i);
                    if (type(e) !== "string" || EXPECT.get(e as string) !== true) err = `"expect_alive" must be a non-empty array of http_2xx, http_3xx, http_4xx, http_5xx${where}`;
                    else list[i - 1] = e as string;
                }
                c.expectAlive = list;
            }
        } else {
            err = unknownField(k, where);
        }
        if (err !== undefined) return $multi(undefined, err);
    }
    return $multi(c, undefined);
}

/**
 * A whole upstream document (PUT): the draft it describes. `name` (lowercase) is the upstream the path
 * names: a "name" field must be that name (any case).
 */
export function parseUpstreamDoc(v: unknown, name: string): Result<RenderSpec> {
    if (!isObject(v)) return $multi(undefined, `the upstream must be a JSON object, got ${describe(v)}`);
    const d: RenderSpec = {
        servers: [], method: "round_robin", hashConsistent: false, randomTwo: false, keepalive: 0, keepaliveTimeout: 60,
        keepaliveRequests: 1000,
    };
    let hashConsistent: boolean | undefined;
    let randomTwo: boolean | undefined;
    let hasServers = false;
    for (const [k, x] of pairs(v)) {
        let err: string | undefined;
        if (k === "servers") {
            hasServers = true;
            if (!isArray(x)) err = `"servers" must be an array of servers, got ${describe(x)}`;
            else if (x.length() > MAX_SERVERS) err = `too many servers in upstream (max ${MAX_SERVERS})`;
            else {
                for (let i = 1; i <= x.length() && err === undefined; i++) {
                    const [s, serr] = parseServerDoc(x.get(i), ` in server ${i}`);
                    if (s === undefined) err = serr;
                    else d.servers[i - 1] = s;
                }
            }
        } else if (k === "method") {
            const m = type(x) === "string" ? METHODS.get(x as string) : undefined;
            if (m === undefined) err = `"method" must be one of round_robin, least_conn, ip_hash, hash, random`;
            else d.method = m;
        } else if (k === "hash_key") {
            if (x !== JSON_NULL) {
                err = stringField(x, k, "", 4096, false, false);
                if (err === undefined) d.hashKey = outStr;
            }
        } else if (k === "hash_consistent" || k === "random_two") {
            err = boolField(x, k, "");
            if (err === undefined) {
                if (k === "hash_consistent") hashConsistent = outBool;
                else randomTwo = outBool;
            }
        } else if (k === "keepalive" || k === "keepalive_requests") {
            err = intField(x, k, "", 0, MAX_INT);
            if (err === undefined) {
                if (k === "keepalive") d.keepalive = outNum;
                else d.keepaliveRequests = outNum;
            }
        } else if (k === "keepalive_timeout") {
            err = secondsField(x, k, "");
            if (err === undefined) d.keepaliveTimeout = outNum;
        } else if (k === "zone") {
            if (x !== JSON_NULL) {
                err = stringField(x, k, "", 255, false, false);
                if (err === undefined) d.zone = outStr;
            }
        } else if (k === "check") {
            if (x !== JSON_NULL) {
                const [c, cerr] = parseCheck(x);
                if (c === undefined) err = cerr;
                else d.check = c;
            }
        } else if (k === "name") {
            if (type(x) !== "string" || string.lower(x as string) !== name) err = `"name" must be the upstream the path names ("${name}")`;
        } else if (type(k) !== "string" || UPSTREAM_READ_ONLY.get(k as string) !== true) {
            err = unknownField(k, " in the upstream");
        }
        if (err !== undefined) return $multi(undefined, err);
    }
    if (!hasServers) return $multi(undefined, `"servers" is required: an array of at least one server`);
    if (d.method === "hash") {
        if (d.hashKey === undefined) return $multi(undefined, `method "hash" needs "hash_key" (e.g. "$request_uri")`);
        d.hashConsistent = hashConsistent === true;
    } else if (d.hashKey !== undefined || hashConsistent === true) {
        return $multi(undefined, `"hash_key" and "hash_consistent" are only for method "hash"`);
    }
    if (d.method === "random") d.randomTwo = randomTwo === true;
    else if (randomTwo === true) return $multi(undefined, `"random_two" is only for method "random"`);
    return $multi(d, undefined);
}
