/** @noSelfInFile */
// Start-up and the per-worker timer.
//   start(opts)    init_by_lua (master): validate options, load the state file and upstream_conf into the dict
//   startWorker()  init_worker_by_lua: apply the current state before the first request; start the timer
//   tick           every sync_interval in every worker: catch up, heartbeat, save the state file, DNS
//
// Start-up precedence (restart: the dict is new; reload: the dict and everything in it survive):
//   1. the state file, when there is one and the dict is new (a restart keeps the run-time state);
//   2. upstream_conf: an upstream of the file is applied when it is new, or when its text in the file
//      changed since the file was last applied (an operator's edit wins); otherwise the run-time state
//      of that name is kept (including its deletion). A broken file stops nginx with file:line.
// Errors here are configuration mistakes: they raise, and nginx refuses to start with the reason.
import { auditWrite, CONF_SOURCE, STATE_SOURCE } from "./audit";
import { recordWrite } from "./history";
import { configureAuth } from "./http/auth";
import { UpstreamRecord } from "./model";
import { DEFAULTS, getOptions, setOptions, validateOptions } from "./options";
import { parseUpstreamFile } from "./parse/upstream";
import { prepare } from "./pipeline";
import { catchUp, heartbeat, sync } from "./registry/sync";
import { healthSync } from "./store/peer_health";
import { booted, confSeen, markBooted, setConfSeen } from "./store/boot";
import { commit, currentVersion, readRecord } from "./store/command_log";
import { resetDict } from "./store/dict";
import { loadStateFile, saveIfChanged } from "./store/state_file";
import { allowedOnly, configureTargets } from "./targets";
import { dnsRelease, dnsTick } from "./dns/refresh";
import { healthRelease, healthTick } from "./health/prober";
import { clusterRelease, clusterTick } from "./cluster/watcher";
import { bumpConfGeneration } from "./store/health";
import { publishTick } from "./metrics/publish";
import { startCounting } from "./metrics/hooks";
import { dictDeclared, prepareMetricsDict, resetMetricsDict } from "./store/metrics";
import { publishEwma } from "./store/ewma";
import { VERSION } from "dyups.version";

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

/**
 * Applies one upstream during start-up (master, no yields). Errors stop nginx, except for an entry of the
 * state file (it has `saved` endpoints), which is skipped with an error (e.g. a target that allowed_targets
 * no longer allows). `display`: the spelling to list it by.
 */
function applyAtStart(name: string, body: string, source: string, saved?: UpstreamRecord["endpoints"], display?: string,
    etcdRev?: number): void {
    const [rec, err] = prepare(name, body, source, true);
    if (rec === undefined) {
        if (source === "state" || saved !== undefined) {
            ngx.log(ngx.ERR, "dyups: upstream ", name, " from the state file is no longer valid (", err, "); skipped");
            return;
        }
        fail(`upstream "${name}": ${err}`);
    }
    if (saved !== undefined) {
        // names not resolvable at start (no DNS in init) start from the last good answers of the state file
        for (const [i, eps] of ipairs(rec.endpoints)) {
            const old = saved[i - 1];
            if (eps.length === 0 && old !== undefined && type(old) === "table") rec.endpoints[i - 1] = allowedOnly(old)[0] ?? [];
        }
    }
    if (etcdRev !== undefined) rec.etcd = etcdRev; // cluster mode: the revision it had in etcd
    if (display !== undefined && display !== name && type(display) === "string" && string.lower(display) === name) rec.display = display;
    const [v, reason, , before] = commit(name, rec);
    if (v === undefined) fail(`cannot store upstream "${name}": ${reason}`);
    if (source === "conf" && saved === undefined) auditWrite("update", name, before, v, CONF_SOURCE, rec);
    else pcall(recordWrite, "update", name, before, v, STATE_SOURCE, rec); // restored: in the history, not audited
}

export function start(opts?: unknown): void {
    const [o, err] = validateOptions(opts);
    if (o === undefined) fail(`bad option: ${err}`);
    setOptions(o);
    const [, aerr] = configureAuth(o);
    if (aerr !== undefined) fail(aerr);
    const [, terr] = configureTargets(o.allowed_targets);
    if (terr !== undefined) fail(terr);
    resetDict();
    if (o.metrics_dict !== DEFAULTS.metrics_dict && !dictDeclared(o.metrics_dict)) {
        fail(`option "metrics_dict": lua_shared_dict "${o.metrics_dict}" is not declared`);
    }
    resetMetricsDict();
    prepareMetricsDict();

    // Parse the whole file first: a broken file changes nothing and stops nginx.
    let confEntries: { name: string; body: string }[] = [];
    if (o.upstream_conf !== undefined) {
        const [entries, perr] = parseUpstreamFile(readFile(o.upstream_conf), o.upstream_conf);
        if (entries === undefined) fail(perr);
        confEntries = entries;
    }

    const fresh = !booted();
    let seen = confSeen();
    if (fresh && o.state_file !== undefined) {
        const st = loadStateFile(o.state_file);
        if (st !== undefined) {
            for (const [, u] of ipairs(st.upstreams)) {
                if (type(u.name) === "string" && type(u.body) === "string") applyAtStart(u.name, u.body, u.source ?? "state", u.endpoints, u.display, u.etcd);
            }
            if (type(st.conf_seen) === "table") seen = st.conf_seen;
            ngx.log(ngx.NOTICE, "dyups: loaded ", st.upstreams.length, " upstreams from ", o.state_file);
        }
    }
    for (const [, e] of ipairs(confEntries)) {
        const sum = ngx.md5(e.body);
        const lname = string.lower(e.name);
        if (seen.get(lname) !== sum || (fresh && readRecord(lname) === undefined && seen.get(lname) === undefined)) {
            applyAtStart(lname, e.body, "conf", undefined, e.name);
        }
        seen.set(lname, sum);
    }
    setConfSeen(seen);
    markBooted();
    bumpConfGeneration();
}

function tick(premature: boolean): void {
    if (premature) {
        // nginx is stopping or reloading: a last save of anything not yet written
        pcall(saveIfChanged);
        pcall(dnsRelease);
        pcall(healthRelease);
        pcall(clusterRelease);
        publishTick(true);
        return;
    }
    const [ok, err] = pcall(sync);
    if (!ok) ngx.log(ngx.ERR, "dyups: sync failed: ", err);
    // other workers' passive failures and the prober's up/down changes reach this worker's cache here:
    // within one sync_interval, with no shm read per request (its own reports apply at once)
    healthSync();
    heartbeat();
    const [cok, cerr] = pcall(clusterTick);
    if (!cok) ngx.log(ngx.ERR, "dyups: cluster tick failed: ", cerr);
    if (getOptions().state_file !== undefined) pcall(saveIfChanged);
    const [dok, derr] = pcall(dnsTick);
    if (!dok) ngx.log(ngx.ERR, "dyups: dns refresh failed: ", derr);
    const [hok, herr] = pcall(healthTick);
    if (!hok) ngx.log(ngx.ERR, "dyups: health checks: ", herr);
    publishTick(false);
    pcall(publishEwma); // balancer ewma: this worker's scores for new versions of any worker (store/ewma.ts)
}

export function startWorker(): void {
    math.randomseed(ngx.now() * 1000 + ngx.worker.pid());
    const [ok, err] = pcall(catchUp);
    if (!ok) ngx.log(ngx.ALERT, "dyups: worker cannot load the current state: ", err);
    healthSync();
    startCounting();
    const [tok, terr] = ngx.timer.every(getOptions().sync_interval, tick);
    if (!tok) ngx.log(ngx.ALERT, "dyups: cannot start the sync timer: ", terr);
    pcall(clusterTick); // cluster mode: the elected worker starts following etcd now, not a tick later
    ngx.log(ngx.NOTICE, "dyups: worker ", ngx.worker.id(), " (pid ", ngx.worker.pid(), ") started, version ", currentVersion(), ", dyups ", VERSION);
}
