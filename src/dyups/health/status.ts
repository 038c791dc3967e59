/** @noSelfInFile */
// What the health checks look like from outside: the check module's status page (check_status content
// handler, also at the interface's /check_status), the `health` part of GET /status, per-server health in
// the JSON views, and the Lua API health(name). Content phase (the page) or any phase that may read shm.
// Cost: O(checked servers) shm gets (one per row); poll it like the module's page, not per request.
//
// Rows are listed from the command log (every worker shows the same rows at once: the module lists each
// worker's own peers, which differ for up to a second after a change): upstreams in creation order, servers
// in body order (servers marked down are not listed, backups are), one row per resolved address. `Index`
// is the row's position in that full list (filtered pages keep it). Counters come from shm; a peer not
// probed yet shows default_down's status with 0/0, as the module's fresh entry.
import * as cjson from "cjson.safe";
import { UpstreamRecord } from "../model";
import { checkedNames, sync } from "../registry/sync";
import { readRecord } from "../store/command_log";
import { confGeneration, readProberStats, readState } from "../store/health";
import { owner } from "../store/lease";
import { CheckConfig, resolveCheck, stateId } from "./config";
import { contentType, filterRows, PageFormat, PageRow, renderPage } from "./page";
import { HealthState } from "./state";
import { addrOf } from "./targets";

export interface ServerHealth {
    upstream: string;
    /** the server line's address as written */
    server: string;
    /** the resolved address (status page Name) */
    addr: string;
    type: string;
    /** check port= (0: the server's) */
    port: number;
    status: "up" | "down";
    rise: number;
    fall: number;
    /** ngx.now() seconds: when it entered its status (0: not probed yet) */
    since: number;
    last_probe: number;
    last_error: string;
    probes: number;
    failures: number;
    /** state key suffix (peer address + check configuration) */
    id: string;
}

function view(name: string, server: string, addr: string, cfg: CheckConfig, st: HealthState | undefined): ServerHealth {
    const id = stateId(cfg, addr);
    const s = st ?? readState(id);
    return {
        upstream: name, server, addr, type: cfg.type, port: cfg.port, id,
        status: (s !== undefined ? s.down : cfg.defaultDown) ? "down" : "up",
        rise: s !== undefined ? s.rise : 0,
        fall: s !== undefined ? s.fall : 0,
        since: s !== undefined && s.probes > 0 ? s.since : 0,
        last_probe: s !== undefined ? s.last : 0,
        last_error: s !== undefined ? s.lastError : "",
        probes: s !== undefined ? s.probes : 0,
        failures: s !== undefined ? s.failures : 0,
    };
}

/** Health of every checked address of one record (server i's addresses, in body order); [] without `check`. */
export function recordHealth(rec: UpstreamRecord, only?: number): ServerHealth[] {
    const out: ServerHealth[] = [];
    const check = rec.spec.check;
    if (check === undefined) return out;
    const cfg = resolveCheck(check);
    for (const [i, s] of ipairs(rec.spec.servers)) {
        if (!s.down && (only === undefined || only === i)) {
            const eps = rec.endpoints[i - 1] ?? [];
            for (const [, e] of ipairs(eps)) out[out.length] = view(rec.name, s.addr, addrOf(e), cfg, undefined);
        }
    }
    return out;
}

/**
 * Every row of the status page, in order: the upstreams with checks, from this worker's registry (caught up
 * first). O(checked upstreams and their peers): GET /status shows it whatever the number of upstreams.
 */
export function allHealth(): ServerHealth[] {
    sync();
    const out: ServerHealth[] = [];
    for (const [, name] of ipairs(checkedNames())) {
        const rec = readRecord(name);
        if (rec !== undefined && rec.spec.check !== undefined) {
            for (const [, h] of ipairs(recordHealth(rec))) out[out.length] = h;
        }
    }
    return out;
}

function pageRows(): PageRow[] {
    const rows: PageRow[] = [];
    for (const [i, h] of ipairs(allHealth())) {
        rows[rows.length] = { index: i - 1, upstream: h.upstream, name: h.addr, down: h.status === "down", rise: h.rise, fall: h.fall, type: h.type, port: h.port };
    }
    return rows;
}

const FORMATS: LuaTable<string, PageFormat> = new LuaTable();
FORMATS.set("html", "html");
FORMATS.set("csv", "csv");
FORMATS.set("json", "json");

/** The first value of a query argument (repeated: the first; valueless: ""). */
function firstArg(args: { [k: string]: string | string[] | boolean }, key: string): string | undefined {
    const v = args[key] as unknown;
    if (v === undefined) return undefined;
    if (type(v) === "table") {
        const first = (v as LuaTable<number, unknown>).get(1);
        return type(first) === "string" ? (first as string) : "";
    }
    return type(v) === "string" ? (v as string) : "";
}

function badArgument(v: string): void {
    ngx.log(ngx.ERR, 'http upstream check, bad argument: "', v, '"');
}

/**
 * The check module's `check_status [html|csv|json]` as a content handler: GET and HEAD (others: 405),
 * ?format= (case-sensitive) and ?status=up|down (case-insensitive); a bad value is logged and ignored.
 */
export function checkStatusPage(defaultFormat?: string): void {
    let format: PageFormat = "html";
    if (defaultFormat !== undefined) {
        const f = FORMATS.get(defaultFormat);
        if (f === undefined) error(`invalid check format "${tostring(defaultFormat)}"`, 2);
        format = f;
    }
    const method = ngx.req.get_method();
    if (method !== "GET" && method !== "HEAD") {
        ngx.exit(405);
        return;
    }
    ngx.req.discard_body();
    const [args] = ngx.req.get_uri_args();
    const fv = firstArg(args, "format");
    if (fv !== undefined) {
        const f = FORMATS.get(fv);
        if (f !== undefined) format = f;
        else badArgument(fv);
    }
    let want: string | undefined;
    const sv = firstArg(args, "status");
    if (sv !== undefined) {
        const l = string.lower(sv);
        if (l === "up" || l === "down") want = l;
        else badArgument(sv);
    }
    const body = renderPage(format, filterRows(pageRows(), want), confGeneration());
    ngx.status = 200;
    ngx.header["Content-Type"] = contentType(format);
    if (method === "HEAD") {
        ngx.send_headers();
        ngx.exit(200);
        return;
    }
    ngx.header["Content-Length"] = `${body.length}`;
    ngx.print(body);
    ngx.exit(200);
}

/** GET /status: the prober and every checked peer (deduplicated by state). */
export function healthReport(): unknown {
    const raw = readProberStats();
    let prober: unknown = undefined;
    if (raw !== undefined) prober = cjson.decode(raw)[0];
    const peers: unknown[] = [];
    const byId: LuaTable<string, { upstreams: string[] }> = new LuaTable();
    let up = 0;
    let down = 0;
    for (const [, h] of ipairs(allHealth())) {
        const seen = byId.get(h.id);
        if (seen !== undefined) {
            seen.upstreams[seen.upstreams.length] = h.upstream;
        } else {
            const p = {
                addr: h.addr, type: h.type, port: h.port, status: h.status, since: h.since, last_probe: h.last_probe,
                last_error: h.last_error, rise: h.rise, fall: h.fall, probes: h.probes, failures: h.failures, upstreams: [h.upstream],
            };
            byId.set(h.id, p);
            peers[peers.length] = p;
            if (h.status === "up") up = up + 1;
            else down = down + 1;
        }
    }
    return { owner: owner("health"), prober, checked: peers.length, up, down, peers: peers.length > 0 ? peers : cjson.empty_array ?? [] };
}
