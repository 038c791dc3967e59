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
//   - `?format=json` on /list, /detail and /upstream/NAME; ETag/If-Match revisions for safe concurrent edits;
//   - /list and /detail stream (http/views.ts): a large answer never holds the worker; JSON views page.
// Every GET catches this worker up first, so it always shows the current state.
import * as cjson from "cjson.safe";
import { get, remove, update } from "../pipeline";
import { sync } from "../registry/sync";
import { statusReport } from "../status";
import { detailLines, detailView, listView, recordJson } from "./views";

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
        segs[n - 1] = seg;
    }
    if (n >= 2 && string.lower(segs[n - 2]) === "upstream") return $multi(["upstream", segs[n - 1]], 2);
    if (n >= 1) {
        const last = string.lower(segs[n - 1]);
        if (last === "list" || last === "detail" || last === "status") return $multi([last], 1);
    }
    return $multi(segs, n);
}

function handleGet(res: string[], n: number): void {
    ngx.req.discard_body();
    sync();
    const what = n > 0 ? string.lower(res[0]) : "";
    // the listings stream (http/views.ts)
    if (what === "list" && n === 1) return listView(wantsJson());
    if (what === "detail" && n === 1) return detailView(wantsJson());
    if (what === "upstream" && n === 2) {
        const rec = get(res[1]);
        if (rec === undefined) return send(404, "");
        ngx.header["ETag"] = `"${rec.rev}"`;
        if (wantsJson()) return sendJson(recordJson(rec));
        const out: string[] = [];
        detailLines(rec, false, out);
        return send(200, table.concat(out));
    }
    if (what === "status" && n === 1) return sendJson(statusReport(ngx.var.arg_refs === "1"));
    if (n === 0) {
        ngx.exit(404); // nginx's own HTML 404 page, as the original
        return;
    }
    return send(404, "");
}

export function handle(): void {
    const method = ngx.req.get_method();
    const [res, n] = resource(ngx.var.uri ?? "/");
    if (method === "GET") return handleGet(res, n);
    if (method === "DELETE") {
        ngx.req.discard_body();
        if (n !== 2) return send(405, "not support this interface");
        if (string.lower(res[0]) !== "upstream") return send(405, "not support this api");
        const [expect, okHeader] = expectedRevision();
        if (!okHeader) return send(400, "invalid If-Match header");
        const [v, reason, status] = remove(res[1], expect);
        if (v === undefined) return send(status, reason);
        ngx.header["X-Dyups-Version"] = `${v}`;
        return send(200, "success");
    }
    // Any other method: the original reads the body first, then only POST is allowed.
    const [body, berr] = readBody();
    if (method !== "POST") return send(405, "");
    if (n !== 2) return send(404, "not support this interface");
    if (string.lower(res[0]) !== "upstream") return send(404, "not support this api");
    if (berr !== undefined) return send(500, berr);
    if (body === undefined) return send(204, "");
    const [expect, okHeader] = expectedRevision();
    if (!okHeader) return send(400, "invalid If-Match header");
    const [v, reason, status] = update(res[1], body, expect);
    if (v === undefined) return send(status, reason);
    ngx.header["X-Dyups-Version"] = `${v}`;
    return send(200, "success");
}
