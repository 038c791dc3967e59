/** @noSelfInFile */
// The HTTP interface (content_by_lua), compatible with ngx_http_dyups_module:
//   GET /list, GET /detail, GET /upstream/NAME, POST /upstream/NAME, DELETE /upstream/NAME
// with the original's statuses and bodies byte for byte (204 on empty list/detail, the `uptream` typo,
// 404 for bad POST paths but 405 for bad DELETE paths, no Content-Type), and these improvements:
//   - the whole URI is the resource, as in the original (dyups.http.router); a location mounted under a
//     prefix says so: interface({ prefix = "/dyups/" }) serves /dyups/list and nothing outside the prefix;
//   - an access gate before routing (dyups.http.auth): tokens with roles, loopback-only without tokens,
//     no cross-site writes; the admitted source goes down to the write pipeline (audit);
//   - a bad body is 400 "add server failed: REASON" (nothing changes), never the original's bare 500;
//   - the whole body is read, chunked or spooled to a temp file;
//   - GET /status (JSON): versions applied by each worker and their lag, shm use, retired versions;
//   - `?format=json` on /list, /detail and /upstream/NAME (with per-server active health); ETag/If-Match
//     revisions for safe concurrent edits; GET /check_status: the check module's status page;
//   - /list and /detail stream (http/views.ts): a large answer never holds the worker; JSON views page;
//   - GET /metrics (Prometheus), GET /stats (JSON) and GET /dashboard (the status page): metrics/routes.ts.
// Every GET catches this worker up first, so it always shows the current state.
import * as cjson from "cjson.safe";
import { get, remove, revisionOf, update } from "../pipeline";
import { sync } from "../registry/sync";
import { admit, Refusal } from "./auth";
import { handleHistory, handleV1, plainRollback, refuseJson, v1Segments } from "./api_v1";
import { interfacePrefix, resource, undeclaredPrefix } from "./router";
import { statusReport } from "../status";
import { checkStatusPage } from "../health/status";
import { serveMetricsResource } from "../metrics/routes";
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
export function readBody(): LuaMultiReturn<[string | undefined, string | undefined]> {
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
        ngx.header["ETag"] = `"${revisionOf(rec)}"`;
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

/** Answers a request the access gate refused (the body is the reason; never a token). */
function refuse(r: Refusal, uri: string): void {
    ngx.req.discard_body();
    if (r.authenticate !== undefined) ngx.header["WWW-Authenticate"] = r.authenticate;
    // a browser asks for credentials on a Basic challenge only: the status page sends that one (the token is the
    // password; a Bearer token works there as anywhere)
    if (r.status === 401 && r.authenticate !== undefined && string.find(uri, "/dashboard/*$")[0] !== undefined) {
        ngx.header["WWW-Authenticate"] = 'Basic realm="dyups", charset="UTF-8"';
    }
    if (r.retryAfter !== undefined) ngx.header["Retry-After"] = `${r.retryAfter}`;
    send(r.status, r.body);
}

/** interface(opts): opts.prefix is the location's prefix ("/dyups/"); default "/" (the whole URI). */
export function handle(opts?: unknown): void {
    const prefix = interfacePrefix(opts);
    const method = ngx.req.get_method();
    const vars = ngx.var;
    const [who, refusal] = admit({
        method, client: vars.remote_addr ?? "", authorization: vars.http_authorization, host: vars.http_host,
        origin: vars.http_origin, fetchSite: vars.http_sec_fetch_site,
    });
    const [res, n] = resource(vars.uri ?? "/", prefix);
    const first = n > 0 ? string.lower(res[0]) : "";
    if (who === undefined) return first === "v1" || first === "history" ? refuseJson(refusal as Refusal) : refuse(refusal as Refusal, vars.uri ?? "/");
    if (first === "v1") return handleV1(method, v1Segments(prefix), who, readBody); // the JSON API (http/api_v1.ts)
    if (first === "history" && n <= 2) return handleHistory(method, res, n);
    const guess = prefix === "/" ? undeclaredPrefix(res, n) : undefined;
    if (guess !== undefined) ngx.log(ngx.WARN, "dyups: ", vars.uri, " is not a resource of an interface at /; if its location has a prefix, declare it: interface({ prefix = \"", guess, "\" })");
    if (n === 1 && string.lower(res[0]) === "check_status") return checkStatusPage(); // the check module's page (GET, HEAD)
    if (method === "GET" && n === 1 && serveMetricsResource(string.lower(res[0]), who.role ?? "write")) return; // metrics/routes.ts
    if (method === "GET") return handleGet(res, n);
    if (method === "DELETE") {
        ngx.req.discard_body();
        if (n !== 2) return send(405, "not support this interface");
        if (string.lower(res[0]) !== "upstream") return send(405, "not support this api");
        const [expect, okHeader] = expectedRevision();
        if (!okHeader) return send(400, "invalid If-Match header");
        const [v, reason, status] = remove(res[1], expect, who);
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
    const rb = ngx.var.arg_rollback; // ?rollback=REV: history.ts, http/api_v1.ts
    if (body === undefined && rb === undefined) return send(204, "");
    const [expect, okHeader] = expectedRevision();
    if (!okHeader) return send(400, "invalid If-Match header");
    if (rb !== undefined) return plainRollback(res[1], rb, body, expect, who, send);
    const [v, reason, status] = update(res[1], body as string, expect, who);
    if (v === undefined) return send(status, reason);
    ngx.header["X-Dyups-Version"] = `${v}`;
    return send(200, "success");
}
