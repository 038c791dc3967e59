/** @noSelfInFile */
// GET /stats: the JSON the dashboard polls every second (content phase, through the interface's gate).
// The node (versions, each worker's applied version and lag), and a page of upstreams sorted by name with
// their peers: weight, flags, state as the balancer sees it, and the cumulative counters of GET /metrics
// (the page computes rates from two polls). `role` is what the access gate admitted the client with:
// "write" (a write token, or no tokens configured) or "read"; the page offers its per-server actions
// (drain, weight, down: PATCH /v1/upstreams/NAME/servers/SERVER) only to "write".
//
//   ?match=TEXT   upstreams whose name contains TEXT (case-insensitive; plain text, not a pattern)
//   ?offset=N     skip the first N matches (default 0);  ?limit=N  at most N upstreams (default 100, max 10000)
//
// Costs: O(upstreams) string compares for the filter, then the reads of metrics/read.ts for the page only.
import * as cjson from "cjson.safe";
import { counting } from "./counters";
import { sortedNames, upstreamInfo } from "./catalog";
import { beginReading, readFigures, PeerFigures } from "./read";
import type { PeerInfo } from "./catalog";
import { metricsDict } from "../store/metrics";
import { currentVersion, upstreamCount } from "../store/command_log";
import { readHeartbeat } from "../store/workers";
import { VERSION } from "dyups.version";

const CLASS_NAMES = ["1xx", "2xx", "3xx", "4xx", "5xx"];
const DEFAULT_LIMIT = 100;
const MAX_LIMIT = 10000;

function classes(c: number[]): LuaTable<string, number> {
    const out: LuaTable<string, number> = new LuaTable();
    for (let k = 1; k <= 5; k++) out.set(CLASS_NAMES[k - 1], c[k - 1]);
    return out;
}

/**
 * up, down (marked down), drained (no new requests), backup (available, used when every primary is out),
 * failing (failed or checked down).
 */
function peerState(p: PeerInfo, f: PeerFigures): string {
    if (p.down) return "down";
    if (p.drain) return "drained";
    if (!f.up) return "failing";
    if (p.backup) return "backup";
    return "up";
}

function intArg(v: unknown, dflt: number, max: number): number {
    if (type(v) !== "string") return dflt;
    const n = tonumber(v as string);
    if (n === undefined || n < 0 || math.floor(n) !== n) return dflt;
    return math.min(n, max);
}

/** The /stats document (also the Lua-side shape the specs read). */
export function statsReport(match: string | undefined, offset: number, limit: number, role: string): unknown {
    const now = ngx.now();
    const version = currentVersion();
    const workers: unknown[] = [];
    for (let id = 0; id < ngx.worker.count(); id++) {
        const hb = readHeartbeat(id);
        if (hb !== undefined) {
            workers[workers.length] = {
                id, pid: hb.pid, applied: hb.applied, lag: math.max(0, version - hb.applied),
                seconds_since_report: math.max(0, now - hb.at), lua_kb: hb.luaKb,
            };
        }
    }
    const traffic = counting();
    const d = traffic ? metricsDict() : undefined;
    const needle = match !== undefined && match !== "" ? string.lower(match) : undefined;
    const list: unknown[] = [];
    let matched = 0;
    beginReading();
    for (const [, name] of ipairs(sortedNames())) {
        if (needle === undefined || string.find(name, needle, 1, true)[0] !== undefined) {
            matched = matched + 1;
            if (matched > offset && list.length < limit) {
                const info = upstreamInfo(name);
                if (info !== undefined) {
                    const fig = readFigures(d, info, now);
                    const peers: unknown[] = [];
                    for (const [i, p] of ipairs(info.peers)) {
                        const f = fig.peers[i - 1];
                        peers[i - 1] = {
                            addr: p.id, server: p.server, weight: p.weight, backup: p.backup, down: p.down, drain: p.drain,
                            state: peerState(p, f), up: f.up, passive_failed: f.failed, check: f.check,
                            requests: f.tries, responses: classes(f.classes),
                            failures: { connect: f.connectFailures, read: f.readFailures }, active: f.active,
                        };
                    }
                    list[list.length] = {
                        name, display: info.display, revision: info.rev, method: info.method,
                        requests: fig.requests, retries: fig.retries, responses: classes(fig.classes),
                        response_time_sum: fig.sum, response_time_count: fig.count, peers_up: fig.peersUp,
                        peers: peers.length > 0 ? peers : cjson.empty_array ?? [],
                    };
                }
            }
        }
    }
    return {
        dyups_version: VERSION, time: now, version, upstreams_total: upstreamCount(), matched, offset, limit,
        role, counting: traffic,
        workers: workers.length > 0 ? workers : cjson.empty_array ?? [],
        upstreams: list.length > 0 ? list : cjson.empty_array ?? [],
    };
}

/** GET /stats as a content handler. `role`: what the access gate admitted the client with. */
export function statsPage(role: string): void {
    const [args] = ngx.req.get_uri_args();
    const m = args["match"] as unknown;
    const match = type(m) === "string" ? (m as string) : undefined;
    const offset = intArg(args["offset"], 0, 1e9);
    const limit = intArg(args["limit"], DEFAULT_LIMIT, MAX_LIMIT);
    const [text] = cjson.encode(statsReport(match, offset, limit, role));
    const out = (text ?? "null") + "\n";
    ngx.status = 200;
    ngx.header["Content-Type"] = "application/json";
    ngx.header["Cache-Control"] = "no-store";
    ngx.header["Content-Length"] = `${out.length}`;
    ngx.print(out);
    ngx.exit(ngx.HTTP_OK);
}
