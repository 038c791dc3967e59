/** @noSelfInFile */
// The HTTP interface (content_by_lua), compatible with ngx_http_dyups_module:
//   GET /list, GET /detail, GET /upstream/NAME, POST /upstream/NAME, DELETE /upstream/NAME
// with the original's statuses and bodies byte for byte (204 on empty list/detail, the `uptream` typo,
// 404 for bad POST paths but 405 for bad DELETE paths, no Content-Type), and these improvements:
//   - works at `location /` and under any prefix location (`location /dyups/` serves /dyups/list): the
//     resource is recognised from the end of the URI;
//   - a bad body is 400 "add server failed: REASON" (nothing changes), never the original's bare 500;
//   - the whole body is read, chunked or spooled to a temp file;
//   - GET /status (JSON): versions applied by each worker and their lag, shm use, retired versions;
//   - `?format=json` on /list, /detail and /upstream/NAME; ETag/If-Match revisions for safe concurrent edits.
// Every GET catches this worker up first, so it always shows the current state.
import * as cjson from "cjson.safe";
import { get, list, remove, revisionOf, update } from "../api";
import { endpointId, sync } from "../registry";
import { Endpoint, UpstreamRecord } from "../model";
import { statusReport } from "../status";

function send(status: number, body: string): void {
    ngx.status = status;
    if (status === 204) {
        ngx.exit(204);
        return;
    }
    // No Content-Type, like the original module (clearing it keeps nginx from adding default_type).
    ngx.header["Content-Type"] = undefined;
    ngx.header["Content-Length"] = `${body.length}`;
    // Send our own headers and body, then end with OK: ngx.exit(status) would send nginx's error page.
    ngx.send_headers();
    if (body !== "") ngx.print(body);
    ngx.exit(ngx.HTTP_OK);
}

function sendJson(value: unknown): void {
    const [text] = cjson.encode(value);
    ngx.status = 200;
    ngx.header["Content-Type"] = "application/json";
    const out = (text ?? "null") + "\n";
    ngx.header["Content-Length"] = `${out.length}`;
    ngx.print(out);
    ngx.exit(ngx.HTTP_OK);
}

/** The address /detail shows for a server directive: its first endpoint, else the address as written. */
function shownAddr(rec: UpstreamRecord, i: number): string {
    const eps = (rec.endpoints as unknown as LuaTable<number, LuaTable<number, Endpoint>>).get(i);
    const e = eps !== undefined ? eps.get(1) : undefined;
    if (e === undefined) return (rec.spec.servers as unknown as LuaTable<number, { addr: string }>).get(i).addr;
    return endpointId(e);
}

function detailLines(rec: UpstreamRecord, full: boolean, out: LuaTable<number, string>): void {
    let n = out.length();
    for (const [i, s] of ipairs(rec.spec.servers)) {
        n = n + 1;
        if (full) {
            out.set(n, `server ${shownAddr(rec, i)} weight=${s.weight} max_conns=${s.maxConns} max_fails=${s.maxFails} fail_timeout=${math.floor(s.failTimeout)} backup=${s.backup ? 1 : 0} down=${s.down ? 1 : 0}\n`);
        } else {
            out.set(n, `server ${shownAddr(rec, i)}\n`);
        }
    }
}

function recordJson(rec: UpstreamRecord): unknown {
    const servers: unknown[] = [];
    for (const [i, s] of ipairs(rec.spec.servers)) {
        const eps = (rec.endpoints as unknown as LuaTable<number, Endpoint[]>).get(i) ?? [];
        const addrs: string[] = [];
        for (const [, e] of ipairs(eps)) {
            addrs[addrs.length] = endpointId(e);
        }
        (servers as unknown as LuaTable<number, unknown>).set(i, {
            addr: s.addr, resolved: addrs, weight: s.weight, max_conns: s.maxConns, max_fails: s.maxFails,
            fail_timeout: s.failTimeout, backup: s.backup, down: s.down, resolve: s.resolve,
        });
    }
    return { name: rec.name, revision: revisionOf(rec), method: rec.spec.method, hash_key: rec.spec.hashKey,
        keepalive: rec.spec.keepalive, servers, body: rec.body };
}

function wantsJson(): boolean {
    if (ngx.var.arg_format === "json") return true;
    const accept = ngx.var.http_accept;
    return accept !== undefined && string.find(accept, "application/json", 1, true)[0] !== undefined;
}

/** The whole request body, wherever nginx keeps it; undefined when the request has no body at all. */
function readBody(): LuaMultiReturn<[string | undefined, string | undefined]> {
    ngx.req.read_body();
    const data = ngx.req.get_body_data();
    if (data !== undefined) return $multi(data, undefined);
    const file = ngx.req.get_body_file();
    if (file !== undefined) {
        const [f, err] = io.open(file, "rb");
        if (f === undefined) return $multi(undefined, `cannot read the request body: ${err}`);
        const text = f.read("*a") as string | undefined;
        f.close();
        return $multi(text ?? "", undefined);
    }
    if (ngx.var.http_content_length !== undefined || ngx.var.http_transfer_encoding !== undefined) return $multi("", undefined);
    return $multi(undefined, undefined);
}

/** ETag / If-Match revision: `"12"` or `12`; If-None-Match: * means "must not exist" (0). */
function expectedRevision(): LuaMultiReturn<[number | undefined, boolean]> {
    const im = ngx.var.http_if_match;
    if (im !== undefined) {
        // nginx's not_modified filter would also test If-Match against our response's ETag: we did the test
        ngx.req.clear_header("If-Match");
        const [digits] = string.match(im, '^%s*"?(%d+)"?%s*$');
        if (digits === undefined) return $multi(undefined, false);
        return $multi(tonumber(digits) as number, true);
    }
    const inm = ngx.var.http_if_none_match;
    if (inm !== undefined && string.match(inm, "^%s*%*%s*$")[0] !== undefined) return $multi(0, true);
    return $multi(undefined, true);
}

/** Splits the URI and finds the resource at its end (prefix locations), else the whole URI (original rules). */
function resource(uri: string): LuaMultiReturn<[string[], number]> {
    const segs: string[] = [];
    let n = 0;
    for (const [seg] of string.gmatch(uri, "[^/]+")) {
        n = n + 1;
        (segs as unknown as LuaTable<number, string>).set(n, seg);
    }
    const s = segs as unknown as LuaTable<number, string>;
    if (n >= 2 && string.lower(s.get(n - 1)) === "upstream") return $multi(["upstream", s.get(n)], 2);
    if (n >= 1) {
        const last = string.lower(s.get(n));
        if (last === "list" || last === "detail" || last === "status") return $multi([last], 1);
    }
    return $multi(segs, n);
}

function handleGet(res: string[], n: number): void {
    ngx.req.discard_body();
    sync();
    const r = res as unknown as LuaTable<number, string>;
    const what = n > 0 ? string.lower(r.get(1)) : "";
    if (what === "list" && n === 1) {
        const names = list();
        if (wantsJson()) return sendJson({ upstreams: names.length > 0 ? names : cjson.empty_array ?? [] });
        if (names.length === 0) return send(204, "");
        return send(200, table.concat(names, "\n") + "\n");
    }
    if (what === "detail" && n === 1) {
        const names = list();
        if (wantsJson()) {
            const all: unknown[] = [];
            for (const [i, name] of ipairs(names)) {
                const rec = get(name);
                if (rec !== undefined) (all as unknown as LuaTable<number, unknown>).set(i, recordJson(rec));
            }
            return sendJson({ upstreams: all });
        }
        const out: LuaTable<number, string> = new LuaTable();
        for (const [, name] of ipairs(names)) {
            const rec = get(name);
            if (rec !== undefined) {
                out.set(out.length() + 1, name + "\n");
                detailLines(rec, true, out);
                out.set(out.length() + 1, "\n");
            }
        }
        if (out.length() === 0) return send(204, "");
        return send(200, table.concat(out as unknown as string[]));
    }
    if (what === "upstream" && n === 2) {
        const rec = get(r.get(2));
        if (rec === undefined) return send(404, "");
        ngx.header["ETag"] = `"${revisionOf(rec)}"`;
        if (wantsJson()) return sendJson(recordJson(rec));
        const out: LuaTable<number, string> = new LuaTable();
        detailLines(rec, false, out);
        return send(200, table.concat(out as unknown as string[]));
    }
    if (what === "status" && n === 1) return sendJson(statusReport());
    if (n === 0) {
        ngx.exit(404); // nginx's own HTML 404 page, as the original
        return;
    }
    return send(404, "");
}

export function handle(): void {
    const method = ngx.req.get_method();
    const [res, n] = resource(ngx.var.uri ?? "/");
    const r = res as unknown as LuaTable<number, string>;
    if (method === "GET") return handleGet(res, n);
    if (method === "DELETE") {
        ngx.req.discard_body();
        if (n !== 2) return send(405, "not support this interface");
        if (string.lower(r.get(1)) !== "upstream") return send(405, "not support this api");
        const [expect, okHeader] = expectedRevision();
        if (!okHeader) return send(400, "invalid If-Match header");
        const [status, msg, v] = remove(r.get(2), expect);
        if (v !== undefined) ngx.header["X-Dyups-Version"] = `${v}`;
        return send(status, msg);
    }
    // Any other method: the original reads the body first, then only POST is allowed.
    const [body, berr] = readBody();
    if (method !== "POST") return send(405, "");
    if (n !== 2) return send(404, "not support this interface");
    if (string.lower(r.get(1)) !== "upstream") return send(404, "not support this api");
    if (berr !== undefined) return send(500, berr);
    if (body === undefined) return send(204, "");
    const [expect, okHeader] = expectedRevision();
    if (!okHeader) return send(400, "invalid If-Match header");
    const [status, msg, v] = update(r.get(2), body, expect);
    if (v !== undefined) ngx.header["X-Dyups-Version"] = `${v}`;
    return send(status, msg);
}
