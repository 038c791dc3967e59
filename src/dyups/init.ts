/** @noSelfInFile */
// The public module `dyups` (also `ngx.dyups`; dyups/init.lua is Lua's name for a package's main module):
// the nginx entry points and the Lua API, each a thin call into the module that does the job.
//
//   init(opts)      init_by_lua: options, state file, upstream_conf          (startup.ts)
//   init_worker()   init_worker_by_lua: current state, the timer              (startup.ts)
//   interface()     content_by_lua: the HTTP interface                        (http/interface.ts)
//   balance()       balancer_by_lua (nginx/dyups.conf)    log()  log_by_lua   (phases/balancer.ts)
//   update(name, body) / delete(name) -> status, message  (the original's Lua API; pipeline.ts)
//   get(name) -> table | nil, list() -> { names }, status() -> table, version() -> log, applied
//   check_status([format])  content_by_lua: the check module's status page; health(name) -> active health
//   _VERSION        the release version ("0.1.0"; from package.json, see tools/build.sh)
import { balance as balancePhase, logPhase } from "./phases/balancer";
import { checkStatusPage, recordHealth } from "./health/status";
import { handle } from "./http/interface";
import * as pipeline from "./pipeline";
import { appliedVersion, sync } from "./registry/sync";
import { start, startWorker } from "./startup";
import { statusReport } from "./status";
import { currentVersion } from "./store/command_log";
import { VERSION } from "dyups.version";

/** The release version (semver), as in GET /status `dyups_version` and the workers' start-up log line. */
export const _VERSION = VERSION;

export function init(opts?: unknown): void {
    start(opts);
}

export function init_worker(): void {
    startWorker();
}

/** content_by_lua: the HTTP interface; `opts.prefix` names the location's prefix ({ prefix = "/dyups/" }). */
function interface_(opts?: unknown): void {
    handle(opts);
}
export { interface_ as interface };

export function balance(): void {
    balancePhase();
}

export function log(): void {
    logPhase();
}

function checkString(v: unknown, n: number, fname: string): string {
    const t = type(v);
    if (t === "number") return tostring(v);
    if (t !== "string") error(`bad argument #${n} to '${fname}' (string expected, got ${t === "nil" ? "no value" : t})`, 3);
    return v as string;
}

/** The original's Lua API: exactly 2 arguments, strings (numbers coerced); returns status, message. */
export function update(this: void, ...args: unknown[]): LuaMultiReturn<[number, string]> {
    if (select("#", ...args) !== 2) error("exactly 2 arguments expected", 2);
    const name = checkString(args[0], 1, "update");
    const body = checkString(args[1], 2, "update");
    const [v, reason, status] = pipeline.update(name, body);
    if (v === undefined) return $multi(status, reason);
    return $multi(200, "success");
}

function delete_(this: void, ...args: unknown[]): LuaMultiReturn<[number, string]> {
    if (select("#", ...args) !== 1) error("exactly 1 argument expected", 2);
    const [v, reason, status] = pipeline.remove(checkString(args[0], 1, "delete"));
    if (v === undefined) return $multi(status, reason);
    return $multi(200, "success");
}
export { delete_ as delete };

/** The stored state of NAME as a plain table ({ name, body, revision, servers = { {addr=, ...} } }) or nil. */
export function get(name: unknown): unknown {
    const rec = pipeline.get(checkString(name, 1, "get"));
    if (rec === undefined) return undefined;
    return { name: rec.name, body: rec.body, revision: pipeline.revisionOf(rec), method: rec.spec.method, servers: rec.spec.servers, endpoints: rec.endpoints };
}

/** Names of all upstreams, in creation order. */
export function list(): string[] {
    sync();
    return pipeline.list();
}

/** The check module's status page as a content handler: `location /status { content_by_lua_block { require("dyups").check_status() } }`. */
export function check_status(format?: string): void {
    checkStatusPage(format);
}

/** Active health of upstream NAME: one table per checked address ({ upstream, server, addr, status, rise, fall, since, last_error, ... }), {} without `check`; nil when unknown. */
export function health(name: unknown): unknown {
    const rec = pipeline.get(checkString(name, 1, "health"));
    if (rec === undefined) return undefined;
    return recordHealth(rec);
}

export function status(): unknown {
    return statusReport();
}

/** The command log's version and the version this worker has applied (tests, monitoring). */
export function version(): LuaMultiReturn<[number, number]> {
    return $multi(currentVersion(), appliedVersion());
}
