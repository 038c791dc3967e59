/** @noSelfInFile */
// The public module `dyups` (also `ngx.dyups`): the nginx entry points and the Lua API.
//
//   init(opts)      init_by_lua: validate options, load upstream_conf and the state file into the dict
//   init_worker()   init_worker_by_lua: apply the current state before the first request; start the timer
//   interface()     content_by_lua: the HTTP interface
//   balance()       balancer_by_lua (nginx/dyups.conf)        log()  log_by_lua (nginx/dyups.conf)
//   update(name, body) / delete(name) -> status, message  (the original's Lua API)
//   get(name) -> table | nil, list() -> { names }, status() -> table
//
// Start-up precedence (restart: the dict is new; reload: the dict and everything in it survive):
//   1. the state file, when there is one and the dict is new (a restart keeps the run-time state);
//   2. upstream_conf: an upstream of the file is applied when it is new, or when its text in the file
//      changed since the file was last applied (an operator's edit wins); otherwise the run-time state
//      of that name is kept (including its deletion). A broken file stops nginx with file:line.
import * as cjson from "cjson.safe";
import * as api from "./api";
import { UpstreamRecord } from "./model";
import { getOptions, setOptions, validateOptions } from "./options";
import { parseUpstreamFile } from "./parse/upstream";
import { balance as balancePhase, logPhase } from "./phases/balancer";
import { handle } from "./http/interface";
import { appliedVersion, catchUp, heartbeat, sync } from "./registry";
import { statusReport } from "./status";
import { commit, currentVersion, readRecord } from "./store/command_log";
import { BOOT, CONF_SEEN } from "./store/keys";
import { resetShm, shm } from "./store/shm";
import { loadStateFile, saveIfChanged } from "./store/state_file";
import { dnsRelease, dnsTick } from "./dns/refresh";
import { clusterRelease, clusterTick } from "./cluster/watcher";

function fail(msg: string): never {
    error(`dyups: ${msg}`, 0);
}

function readFile(path: string): string {
    const [f, err] = io.open(path, "rb");
    if (f === undefined) fail(`cannot open upstream_conf: ${err}`);
    const text = f.read("*a") as string | undefined;
    f.close();
    return text ?? "";
}

/** Applies one upstream during start-up (master, no yields). Errors stop nginx. */
function applyAtStart(name: string, body: string, source: string, saved?: UpstreamRecord["endpoints"], etcdRev?: number): void {
    const [rec, err] = api.prepare(name, body, source);
    if (rec === undefined) {
        if (source === "state") {
            ngx.log(ngx.ERR, "dyups: upstream ", name, " from the state file is no longer valid (", err, "); skipped");
            return;
        }
        fail(`upstream "${name}": ${err}`);
    }
    if (saved !== undefined) {
        // names not resolvable at start (no DNS in init) start from the last good answers of the state file
        for (const [i, eps] of ipairs(rec.endpoints)) {
            const old = (saved as unknown as LuaTable<number, UpstreamRecord["endpoints"][0]>).get(i);
            if (eps.length === 0 && old !== undefined && type(old) === "table") {
                (rec.endpoints as unknown as LuaTable<number, unknown>).set(i, old);
            }
        }
    }
    if (etcdRev !== undefined) rec.etcd = etcdRev; // cluster mode: the revision it had in etcd
    const [v, reason] = commit(name, rec);
    if (v === undefined) fail(`cannot store upstream "${name}": ${reason}`);
}

export function init(opts?: unknown): void {
    const [o, err] = validateOptions(opts);
    if (o === undefined) fail(`bad option: ${err}`);
    setOptions(o);
    resetShm();
    const dict = shm();

    // Parse the whole file first: a broken file changes nothing and stops nginx.
    let confEntries: { name: string; body: string }[] = [];
    if (o.upstream_conf !== undefined) {
        const [entries, perr] = parseUpstreamFile(readFile(o.upstream_conf), o.upstream_conf);
        if (entries === undefined) fail(perr as string);
        confEntries = entries as unknown as { name: string; body: string }[];
    }

    let seen: LuaTable<string, string> = new LuaTable();
    const [boot] = dict.get(BOOT);
    if (boot === undefined) {
        if (o.state_file !== undefined) {
            const st = loadStateFile(o.state_file);
            if (st !== undefined) {
                for (const [, u] of ipairs(st.upstreams)) {
                    if (type(u.name) === "string" && type(u.body) === "string") applyAtStart(u.name, u.body, u.source ?? "state", u.endpoints, u.etcd);
                }
                if (type(st.conf_seen) === "table") seen = st.conf_seen;
                ngx.log(ngx.NOTICE, "dyups: loaded ", (st.upstreams as unknown as unknown[]).length, " upstreams from ", o.state_file);
            }
        }
    } else {
        const [raw] = dict.get(CONF_SEEN);
        if (raw !== undefined) {
            const [t] = cjson.decode(raw as string);
            if (t !== undefined) seen = t as LuaTable<string, string>;
        }
    }
    for (const [, e] of ipairs(confEntries)) {
        const sum = ngx.md5(e.body);
        const lname = string.lower(e.name);
        if (seen.get(lname) !== sum || (boot === undefined && readRecord(lname) === undefined && seen.get(lname) === undefined)) {
            applyAtStart(lname, e.body, "conf");
        }
        seen.set(lname, sum);
    }
    const [enc] = cjson.encode(seen);
    dict.set(CONF_SEEN, enc ?? "{}");
    dict.set(BOOT, "1");
}

function tick(premature: boolean): void {
    if (premature) {
        // nginx is stopping or reloading: a last save of anything not yet written
        pcall(saveIfChanged);
        pcall(dnsRelease);
        pcall(clusterRelease);
        return;
    }
    const [ok, err] = pcall(sync);
    if (!ok) ngx.log(ngx.ERR, "dyups: sync failed: ", err);
    heartbeat();
    const [cok, cerr] = pcall(clusterTick);
    if (!cok) ngx.log(ngx.ERR, "dyups: cluster tick failed: ", cerr);
    if (getOptions().state_file !== undefined) pcall(saveIfChanged);
    const [dok, derr] = pcall(dnsTick);
    if (!dok) ngx.log(ngx.ERR, "dyups: dns refresh failed: ", derr);
}

export function init_worker(): void {
    math.randomseed(ngx.now() * 1000 + ngx.worker.pid());
    const [ok, err] = pcall(catchUp);
    if (!ok) ngx.log(ngx.ALERT, "dyups: worker cannot load the current state: ", err);
    const [tok, terr] = ngx.timer.every(getOptions().sync_interval, tick);
    if (!tok) ngx.log(ngx.ALERT, "dyups: cannot start the sync timer: ", terr);
    pcall(clusterTick); // cluster mode: the elected worker starts following etcd now, not a tick later
    ngx.log(ngx.NOTICE, "dyups: worker ", ngx.worker.id(), " (pid ", ngx.worker.pid(), ") started, version ", currentVersion());
}

function interface_(): void {
    handle();
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
    const [status, msg] = api.update(name, body);
    return $multi(status, msg);
}

function delete_(this: void, ...args: unknown[]): LuaMultiReturn<[number, string]> {
    if (select("#", ...args) !== 1) error("exactly 1 argument expected", 2);
    const [status, msg] = api.remove(checkString(args[0], 1, "delete"));
    return $multi(status, msg);
}
export { delete_ as delete };

/** The stored state of NAME as a plain table ({ name, body, revision, servers = { {addr=, ...} } }) or nil. */
export function get(name: unknown): unknown {
    const rec = api.get(checkString(name, 1, "get"));
    if (rec === undefined) return undefined;
    return { name: rec.name, body: rec.body, revision: api.revisionOf(rec), method: rec.spec.method, servers: rec.spec.servers, endpoints: rec.endpoints };
}

/** Names of all upstreams, in creation order. */
export function list(): string[] {
    sync();
    return api.list();
}

export function status(): unknown {
    return statusReport();
}

/** The command log's version and the version this worker has applied (tests, monitoring). */
export function version(): LuaMultiReturn<[number, number]> {
    return $multi(currentVersion(), appliedVersion());
}
