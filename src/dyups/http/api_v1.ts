/** @noSelfInFile */
// The operations side of the HTTP interface, next to the plain-text protocol (http/interface.ts calls in
// after its access gate, with the admitted source):
//   /v1/...                        the JSON API: upstreams as documents, PUT/DELETE of an upstream, one
//                                  server added, changed, drained or removed (NGINX Plus's operations), a
//                                  rollback, the history, and the OpenAPI document (docs/openapi.json)
//   GET /history[/NAME]            the write history (JSON), as /v1/history
//   POST /upstream/NAME?rollback=REV   the plain protocol's rollback (answers as a POST does)
// Every write takes If-Match ("REV", or * for "must exist"; If-None-Match: * for "must not exist") and answers
// an ETag ("REV", the upstream's revision after it); ?dry_run=1 validates and answers the diff, changing
// nothing. Errors are JSON: {"status": N, "reason": "..."}. Reads need the read role, writes the write role:
// the access gate (http/auth.ts) has decided that before this module runs.
// Path segments of /v1 are taken from the raw request URI and unescaped one by one, so a server id may hold
// slashes (unix:/run/app.sock is unix%3A%2Frun%2Fapp.sock); "." and ".." segments resolve as nginx resolves
// them (an upstream named ".." cannot be named in a path, as with the plain protocol).
// Phase: content. Cost: a read is O(servers) (O(upstreams x servers) for the list); a write is a POST's.
import type { WriteSource } from "../audit";
import type { UpstreamRecord } from "../model";
import { recordHealth } from "../health/status";
import { bodyAt, listHistory } from "../history";
import { validateName } from "../parse/upstream";
import type { RenderServer } from "../parse/render";
import { get, list, update } from "../pipeline";
import { endpointId } from "../registry/build";
import { sync } from "../registry/sync";
import { historyStats } from "../store/history";
import { activeConnections } from "../store/peer_health";
import { peerInFlight } from "../metrics/read";
import { getOptions } from "../options";
import { parseServerDoc, parseUpstreamDoc, patchServer, serverDoc, upstreamDoc } from "../ops/document";
import { editUpstream, rollback, writeBody, WriteOptions, Written } from "../ops/edit";
import type { Refusal } from "./auth";
import { decodeJson, encodeJson, isJsonArray, jsonArray } from "../ops/json";
import { renderBody } from "../parse/render";
import { OPENAPI } from "dyups.openapi";

type Doc = Record<string, unknown>;

const find = string.find;
const sub = string.sub;
const lower = string.lower;

/** Sends a JSON answer and ends the request. */
function sendJson(status: number, value: unknown): void {
    const text = encodeJson(value) + "\n";
    ngx.status = status;
    ngx.header["Content-Type"] = "application/json";
    ngx.header["Content-Length"] = `${text.length}`;
    ngx.send_headers();
    ngx.print(text);
    ngx.exit(ngx.HTTP_OK);
}

/** An error answer: {"status": N, "reason": "..."}. */
export function sendError(status: number, reason: string, allow?: string): void {
    if (allow !== undefined) ngx.header["Allow"] = allow;
    sendJson(status, { status, reason });
}

/** A request the access gate refused, answered in JSON (the reason; never a token). */
export function refuseJson(r: Refusal): void {
    ngx.req.discard_body();
    if (r.authenticate !== undefined) ngx.header["WWW-Authenticate"] = r.authenticate;
    if (r.retryAfter !== undefined) ngx.header["Retry-After"] = `${r.retryAfter}`;
    sendError(r.status, r.body);
}

function etag(rev: number): void {
    ngx.header["ETag"] = `"${rev}"`;
}

/** The /v1 path's segments after "v1": from the raw URI, split on "/", each unescaped (see the header). */
export function v1Segments(prefix: string): string[] {
    let raw = ngx.var.request_uri ?? "/";
    const [q] = find(raw, "?", 1, true);
    if (q !== undefined) raw = sub(raw, 1, q - 1);
    if (prefix !== "/" && sub(raw, 1, prefix.length) === prefix) raw = sub(raw, prefix.length);
    const out: string[] = [];
    let seenV1 = false;
    for (const [seg] of string.gmatch(raw, "[^/]+")) {
        const part = ngx.unescape_uri(seg);
        // dot segments as nginx resolves them in $uri: "." stays, ".." goes up one
        if (part === "..") {
            if (out.length > 0) table.remove(out);
        } else if (part !== ".") {
            if (seenV1) out[out.length] = part;
            else if (lower(part) === "v1") seenV1 = true;
        }
    }
    return out;
}

// ---------------------------------------------------------------------------------------------------------
// Request details

function arg(name: string): string | boolean | undefined {
    const [args] = ngx.req.get_uri_args(100);
    const v = args[name];
    if (type(v) === "table") return (v as string[])[0];
    return v as string | boolean | undefined;
}

/** ?dry_run: 1/true/yes/valueless is a dry run; 0/false/no or absent is not; anything else undefined (400). */
function dryRunArg(): boolean | undefined {
    const v = arg("dry_run");
    if (v === undefined || v === "0" || v === "false" || v === "no") return false;
    if (v === true || v === "1" || v === "true" || v === "yes" || v === "") return true;
    return undefined;
}

/** A positive integer query argument ("limit", "revision"): [value], [undefined] when absent, or false when bad. */
function intArg(name: string): number | undefined | false {
    const v = arg(name);
    if (v === undefined) return undefined;
    if (type(v) !== "string" || find(v as string, "^%d+$")[0] === undefined || (v as string).length > 9) return false;
    return tonumber(v) as number;
}

/**
 * The precondition of a write: If-Match "REV" / REV / * (must exist: the current revision), If-None-Match *
 * (must not exist: 0). Clears both headers (nginx's not-modified filter would test them again against the
 * answer's ETag). [expect] (undefined: none), or [undefined, reason] for a malformed header / 412 for *.
 */
function precondition(name: string | undefined): LuaMultiReturn<[number | undefined, string | undefined, number | undefined]> {
    const im = ngx.var.http_if_match;
    const inm = ngx.var.http_if_none_match;
    ngx.req.clear_header("If-Match");
    ngx.req.clear_header("If-None-Match");
    if (im !== undefined) {
        if (find(im, "^%s*%*%s*$")[0] !== undefined) {
            const cur = name !== undefined ? get(name) : undefined;
            if (cur === undefined) return $multi(undefined, "If-Match: * but the upstream does not exist", 412);
            return $multi(cur.rev, undefined, undefined);
        }
        const [digits] = string.match(im, '^%s*W?/?"?(%d+)"?%s*$');
        if (digits === undefined || digits.length > 15) return $multi(undefined, `invalid If-Match header: expected "REVISION" (the ETag) or *`, 400);
        return $multi(tonumber(digits) as number, undefined, undefined);
    }
    if (inm !== undefined) {
        if (find(inm, "^%s*%*%s*$")[0] === undefined) return $multi(undefined, "invalid If-None-Match header on a write: only * (create only)", 400);
        return $multi(0, undefined, undefined);
    }
    return $multi(undefined, undefined, undefined);
}

/** The request body as JSON: [value] or [undefined, reason]. An absent or empty body is a reason. */
function jsonBody(readBody: () => LuaMultiReturn<[string | undefined, string | undefined]>): LuaMultiReturn<[unknown, undefined] | [undefined, string]> {
    const [text, err] = readBody();
    if (err !== undefined) return $multi(undefined, err);
    if (text === undefined || find(text, "^%s*$")[0] !== undefined) return $multi(undefined, "a JSON body is required");
    return decodeJson(text);
}

// ---------------------------------------------------------------------------------------------------------
// Documents with run-time figures

/** How many of the record's peers have address `id` (its server entries: store/peer_health.ts). */
function entriesOf(rec: UpstreamRecord, id: string): number {
    let n = 0;
    for (const [, eps] of ipairs(rec.endpoints)) for (const [, e] of ipairs(eps)) if (endpointId(e) === id) n = n + 1;
    return n;
}

/**
 * A server's document with its resolved addresses, active requests (across workers) and health. `active`:
 * the tries in flight the traffic counters published (about once a second; every request counts, whatever
 * version it routes by), or, with metrics off, the connection counts of its server entries (counted by the
 * versions that count them: after a drain, the new requests; see README).
 */
function liveServer(rec: UpstreamRecord, i: number, s: RenderServer): Doc {
    const doc = serverDoc(s);
    const resolved = jsonArray<string>();
    let active = 0;
    for (const [, e] of ipairs(rec.endpoints[i - 1] ?? [])) {
        const id = endpointId(e);
        resolved[resolved.length] = id;
        active = active + (peerInFlight(rec.name, id) ?? activeConnections(rec.name, id, entriesOf(rec, id)));
    }
    doc.resolved = resolved;
    doc.active = active;
    if (rec.spec.check !== undefined) doc.health = jsonArray(recordHealth(rec, i));
    return doc;
}

function liveUpstream(rec: UpstreamRecord): Doc {
    const doc = upstreamDoc(rec);
    const servers = jsonArray<Doc>();
    for (const [i, s] of ipairs(rec.spec.servers)) servers[i - 1] = liveServer(rec, i, s);
    doc.servers = servers;
    return doc;
}

function serversDoc(rec: UpstreamRecord): Doc {
    return { upstream: rec.display ?? rec.name, revision: rec.rev, servers: liveUpstream(rec).servers };
}

/** The position of the server with address `id` in rec, or [undefined, reason, status]. */
function findServer(servers: RenderServer[], id: string, upstream: string): LuaMultiReturn<[number, undefined, undefined] | [undefined, string, number]> {
    let at: number | undefined;
    let count = 0;
    for (const [i, s] of ipairs(servers)) {
        if (s.addr === id) {
            count = count + 1;
            if (at === undefined) at = i;
        }
    }
    if (at === undefined) return $multi(undefined, `upstream "${upstream}" has no server "${id}"`, 404);
    if (count > 1) return $multi(undefined, `server "${id}" is listed ${count} times in upstream "${upstream}": change it with PUT`, 409);
    return $multi(at, undefined, undefined);
}

function lookup(name: string): UpstreamRecord | undefined {
    const [lname] = validateName(name);
    return lname === undefined ? undefined : get(lname);
}

// ---------------------------------------------------------------------------------------------------------
// Answers to writes

/** Answers a write's outcome: the dry-run report, or `answer(written)` with ETag and X-Dyups-Version. */
function answer(res: Written | undefined, reason: string | undefined, status: number | undefined, ok: (w: Written) => LuaMultiReturn<[number, unknown]>): void {
    if (res === undefined) return sendError(status as number, reason as string);
    if (res.report !== undefined) {
        const cur = res.report.revision as number;
        if (cur > 0) etag(cur); // the revision the diff is against: If-Match it to apply exactly this
        return sendJson(200, res.report);
    }
    if (res.version !== undefined) ngx.header["X-Dyups-Version"] = `${res.version}`;
    if (res.rec !== undefined) etag(res.rec.rev);
    const [code, body] = ok(res);
    sendJson(code, body);
}

function upstreamAnswer(w: Written): LuaMultiReturn<[number, unknown]> {
    if (w.rec === undefined) return $multi(200, { deleted: w.name, version: w.version });
    return $multi(w.created ? 201 : 200, liveUpstream(w.rec));
}

function serverAnswer(id: string, created: boolean): (w: Written) => LuaMultiReturn<[number, unknown]> {
    return (w: Written) => {
        const rec = w.rec as UpstreamRecord;
        for (const [i, s] of ipairs(rec.spec.servers)) {
            if (s.addr === id) return $multi(created ? 201 : 200, liveServer(rec, i, s));
        }
        return $multi(200, serversDoc(rec)); // changed again meanwhile: the current servers
    };
}

function serversAnswer(w: Written): LuaMultiReturn<[number, unknown]> {
    return $multi(200, serversDoc(w.rec as UpstreamRecord));
}

// ---------------------------------------------------------------------------------------------------------
// Routes

const UPSTREAM_ALLOW = "GET, HEAD, PUT, DELETE";
const SERVERS_ALLOW = "GET, HEAD, POST";
const SERVER_ALLOW = "GET, HEAD, PATCH, DELETE";

function isRead(method: string): boolean {
    return method === "GET" || method === "HEAD";
}

function historyAnswer(name: string | undefined): void {
    const limit = intArg("limit");
    if (limit === false) return sendError(400, `"limit" must be a positive integer`);
    let lname: string | undefined;
    if (name !== undefined) {
        const [n, err] = validateName(name);
        if (n === undefined) return sendError(400, err);
        lname = n;
    }
    const size = getOptions().history_size;
    const st = historyStats();
    sendJson(200, {
        history: jsonArray(listHistory(limit !== undefined && limit > 0 ? limit : size, lname)),
        history_size: size, kept: st.kept, bytes: st.bytes, budget: st.budget, lost: st.lost, cut: st.cut,
    });
}

/** GET /history and /history/NAME of the plain interface (also /v1/history). */
export function handleHistory(method: string, segs: string[], n: number): void {
    ngx.req.discard_body();
    if (!isRead(method)) return sendError(405, "the history is read-only", "GET, HEAD");
    if (n > 2) return sendError(404, "unknown path: /history or /history/NAME");
    sync();
    historyAnswer(n === 2 ? segs[1] : undefined);
}

type BodyReader = () => LuaMultiReturn<[string | undefined, string | undefined]>;

function writeOptions(who: WriteSource, action: string, server: string | undefined, name: string | undefined): LuaMultiReturn<[WriteOptions | undefined, string | undefined, number | undefined]> {
    const dry = dryRunArg();
    if (dry === undefined) return $multi(undefined, `"dry_run" must be 1, true, 0 or false`, 400);
    const [expect, perr, pstatus] = precondition(name);
    if (perr !== undefined) return $multi(undefined, perr, pstatus);
    const source: WriteSource = { kind: who.kind, client: who.client, token: who.token, role: who.role, action: { name: action, server } };
    return $multi({ expect, dryRun: dry, source }, undefined, undefined);
}

/** A read of upstream NAME: its current record, or undefined when it answered 404 (request body discarded). */
function recordOrNotFound(name: string): UpstreamRecord | undefined {
    ngx.req.discard_body();
    sync();
    const rec = lookup(name);
    if (rec === undefined) sendError(404, `upstream "${name}" not found`);
    return rec;
}

function upstreamRoute(method: string, name: string, who: WriteSource, readBody: BodyReader): void {
    if (isRead(method)) {
        const rec = recordOrNotFound(name);
        if (rec === undefined) return;
        etag(rec.rev);
        return sendJson(200, liveUpstream(rec));
    }
    if (method !== "PUT" && method !== "DELETE") return sendError(405, `${method} is not allowed here`, UPSTREAM_ALLOW);
    const [opts, oerr, ostatus] = writeOptions(who, method === "PUT" ? "put" : "delete", undefined, name);
    if (opts === undefined) return sendError(ostatus as number, oerr as string);
    if (method === "DELETE") {
        ngx.req.discard_body();
        const [res, reason, status] = writeBody(name, undefined, opts);
        return answer(res, reason, status, upstreamAnswer);
    }
    const [doc, derr] = jsonBody(readBody);
    if (derr !== undefined) return sendError(400, derr);
    const [lname, nerr] = validateName(name);
    if (lname === undefined) return sendError(400, nerr);
    const [draft, perr] = parseUpstreamDoc(doc, lname);
    if (draft === undefined) return sendError(400, perr);
    const [res, reason, status] = writeBody(name, renderBody(draft), opts);
    answer(res, reason, status, upstreamAnswer);
}

function serversRoute(method: string, name: string, who: WriteSource, readBody: BodyReader): void {
    if (isRead(method)) {
        const rec = recordOrNotFound(name);
        if (rec === undefined) return;
        etag(rec.rev);
        return sendJson(200, serversDoc(rec));
    }
    if (method !== "POST") return sendError(405, `${method} is not allowed here`, SERVERS_ALLOW);
    const [doc, derr] = jsonBody(readBody);
    if (derr !== undefined) return sendError(400, derr);
    const [server, serr] = parseServerDoc(doc, "");
    if (server === undefined) return sendError(400, serr);
    const [opts, oerr, ostatus] = writeOptions(who, "add_server", server.addr, name);
    if (opts === undefined) return sendError(ostatus as number, oerr as string);
    const [res, reason, status] = editUpstream(name, (draft) => {
        for (const [, s] of ipairs(draft.servers)) {
            if (s.addr === server.addr) return $multi(undefined, `server "${server.addr}" is already in upstream "${name}"`, 409);
        }
        draft.servers[draft.servers.length] = server;
        return $multi(draft, undefined, undefined);
    }, opts);
    if (res !== undefined && res.report === undefined) ngx.header["Location"] = ngx.var.uri + "/" + ngx.escape_uri(server.addr);
    answer(res, reason, status, serverAnswer(server.addr, true));
}

function serverRoute(method: string, name: string, id: string, who: WriteSource, readBody: BodyReader): void {
    if (isRead(method)) {
        const rec = recordOrNotFound(name);
        if (rec === undefined) return;
        const [at, ferr, fstatus] = findServer(rec.spec.servers, id, name);
        if (at === undefined) return sendError(fstatus, ferr);
        etag(rec.rev);
        return sendJson(200, liveServer(rec, at, rec.spec.servers[at - 1]));
    }
    if (method !== "PATCH" && method !== "DELETE") return sendError(405, `${method} is not allowed here`, SERVER_ALLOW);
    let patch: unknown;
    if (method === "PATCH") {
        const [doc, derr] = jsonBody(readBody);
        if (derr !== undefined) return sendError(400, derr);
        patch = doc;
    } else {
        ngx.req.discard_body();
    }
    const [opts, oerr, ostatus] = writeOptions(who, method === "PATCH" ? "update_server" : "remove_server", id, name);
    if (opts === undefined) return sendError(ostatus as number, oerr as string);
    const [res, reason, status] = editUpstream(name, (draft) => {
        const [at, ferr, fstatus] = findServer(draft.servers, id, name);
        if (at === undefined) return $multi(undefined, ferr, fstatus);
        if (method === "DELETE") {
            table.remove(draft.servers, at);
            return $multi(draft, undefined, undefined);
        }
        const [s, perr] = patchServer(draft.servers[at - 1], patch);
        if (s === undefined) return $multi(undefined, perr, 400);
        draft.servers[at - 1] = s;
        return $multi(draft, undefined, undefined);
    }, opts);
    answer(res, reason, status, method === "DELETE" ? serversAnswer : serverAnswer(id, false));
}

function rollbackRoute(method: string, name: string, who: WriteSource, readBody: BodyReader): void {
    if (method !== "POST") return sendError(405, `${method} is not allowed here`, "POST");
    let rev = intArg("revision");
    if (rev === false) return sendError(400, `"revision" must be a positive integer`);
    if (rev === undefined) {
        const [doc, derr] = jsonBody(readBody);
        if (derr !== undefined) return sendError(400, `${derr} ({"revision": REV}, or ?revision=REV)`);
        const t = doc as LuaTable<AnyNotNil, unknown>;
        if (type(doc) !== "table" || isJsonArray(doc)) return sendError(400, `the body must be {"revision": REV}`);
        for (const [k] of pairs(t)) {
            if (k !== "revision") return sendError(400, `unknown field "${string.sub(tostring(k), 1, 64)}": the body is {"revision": REV}`);
        }
        const r = t.get("revision");
        if (type(r) !== "number" || math.floor(r as number) !== r || (r as number) < 1 || (r as number) > 2 ** 53) {
            return sendError(400, `"revision" must be a positive integer`);
        }
        rev = r as number;
    } else {
        ngx.req.discard_body();
    }
    const [opts, oerr, ostatus] = writeOptions(who, "rollback", undefined, name);
    if (opts === undefined) return sendError(ostatus as number, oerr as string);
    const [res, reason, status] = rollback(name, rev, opts);
    answer(res, reason, status, upstreamAnswer);
}

function upstreamsList(method: string): void {
    ngx.req.discard_body();
    if (!isRead(method)) return sendError(405, `${method} is not allowed here: PUT /v1/upstreams/NAME creates one`, "GET, HEAD");
    sync();
    const out = jsonArray<Doc>();
    for (const [, name] of ipairs(list())) {
        const rec = lookup(name);
        if (rec !== undefined) out[out.length] = liveUpstream(rec);
    }
    sendJson(200, { upstreams: out });
}

/** /v1/...: `segs` are the segments after "v1" (v1Segments). */
export function handleV1(method: string, segs: string[], who: WriteSource, readBody: BodyReader): void {
    const n = segs.length;
    const what = n > 0 ? segs[0] : "";
    if (what === "openapi.json" && n === 1) {
        ngx.req.discard_body();
        if (!isRead(method)) return sendError(405, `${method} is not allowed here`, "GET, HEAD");
        ngx.status = 200;
        ngx.header["Content-Type"] = "application/json";
        ngx.header["Content-Length"] = `${OPENAPI.length}`;
        ngx.print(OPENAPI);
        return ngx.exit(ngx.HTTP_OK);
    }
    if (what === "history" && n <= 2) return handleHistory(method, segs, n);
    if (what === "upstreams") {
        if (n === 1) return upstreamsList(method);
        if (n === 2) return upstreamRoute(method, segs[1], who, readBody);
        if (n === 3 && segs[2] === "servers") return serversRoute(method, segs[1], who, readBody);
        if (n === 4 && segs[2] === "servers") return serverRoute(method, segs[1], segs[3], who, readBody);
        if (n === 3 && segs[2] === "rollback") return rollbackRoute(method, segs[1], who, readBody);
    }
    ngx.req.discard_body();
    sendError(404, "unknown path: see GET /v1/openapi.json");
}

/**
 * POST /upstream/NAME?rollback=REV of the plain protocol: the body upstream NAME had at REV, written as a new
 * POST (the same answers: 200 "success" with X-Dyups-Version and ETag, 400 "add server failed: REASON",
 * 412, ...; 404/410 with the reason when the history does not hold REV). `body`: the request's body, which
 * must be empty.
 */
export function plainRollback(name: string, revText: string, body: string | undefined, expect: number | undefined, who: WriteSource,
    send: (status: number, text: string) => void): void {
    if (find(revText, "^%d+$")[0] === undefined || revText.length > 15) return send(400, "rollback: the revision must be a positive integer\n");
    if (body !== undefined && body !== "") return send(400, "rollback: send no body with ?rollback=REV\n");
    ngx.req.clear_header("If-None-Match"); // nginx's not-modified filter would test it against our ETag
    const rev = tonumber(revText) as number;
    const [lname, nerr] = validateName(name);
    if (lname === undefined) return send(400, `add server failed: ${nerr}`);
    const [old, reason, status] = bodyAt(lname, rev);
    if (old === undefined) return send(status, reason);
    const source: WriteSource = { kind: who.kind, client: who.client, token: who.token, role: who.role, action: { name: "rollback", revision: rev } };
    const [v, ureason, ustatus] = update(name, old, expect, source);
    if (v === undefined) return send(ustatus, ureason);
    ngx.header["X-Dyups-Version"] = `${v}`;
    ngx.header["ETag"] = `"${v}"`;
    send(200, "success");
}
