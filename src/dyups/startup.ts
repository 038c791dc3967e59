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
// Errors here are configuration mistakes: they raise, and nginx refuses to start with the reason (a bad
// option, an invalid upstream_conf). What does not depend on the configuration never stops nginx: a state
// file that is not a state is moved aside, its invalid records are reported and kept in a copy of the file,
// and upstreams that do not fit the dict (either file) are reported, loudly, and left out (dyups.state.load;
// GET /status shows the report).
import { auditWrite, CONF_SOURCE, STATE_SOURCE } from "./audit";
import { recordWrite } from "./history";
import { configureAuth } from "./http/auth";
import { Endpoint } from "./model";
import { DEFAULTS, getOptions, setOptions, validateOptions } from "./options";
import { parseUpstreamFile } from "./parse/upstream";
import { prepare } from "./pipeline";
import { tryBuild } from "./registry/build";
import { catchUp, heartbeat, sync } from "./registry/sync";
import { healthSync } from "./store/peer_health";
import { booted, confSeen, markBooted, setConfSeen } from "./store/boot";
import { upstreamsThatFit } from "./store/budget";
import { commit, currentVersion, prepareStore, readRecord, topUpReserve } from "./store/command_log";
import { resetDict } from "./store/dict";
import { loadReport, prepareStateKeys, setLoadReport } from "./store/state_file";
import { copyAside } from "./state/files";
import { readState, Rejection, StateLoad } from "./state/load";
import { saveIfChanged, saveSoon } from "./state/save";
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

/** how many names a report lists (the counts are always whole) */
const REPORT_MAX = 100;

/** What start-up could not load, for the log and GET /status (store/state_file.ts sf:load). */
interface Skipped {
    rejected: Rejection[];
    /** names that did not fit (429 max_upstreams, 507 dict full) */
    notLoaded: string[];
    notLoadedReason?: string;
}

/** What a state-file record brings besides its body (restored: it comes from the state file). */
interface Saved {
    restored?: boolean;
    endpoints?: Endpoint[][];
    display?: string;
    etcd?: number;
}

/**
 * Applies one upstream during start-up (master, no yields), through the write pipeline's checks like a POST
 * (the body, the allowed targets, the sandbox build). `display`: the spelling to list it by. Returns nothing
 * when it is stored, else [reason, invalid]: invalid = false when the upstream is valid but did not fit (429
 * max_upstreams, 507 the dict's budget or memory).
 */
function applyAtStart(name: string, body: string, source: string, saved: Saved, display?: string): LuaMultiReturn<[string, boolean] | [undefined, undefined]> {
    // atStart: a stored `balancer` whose picker is not registered in this nginx is kept (balance/pickers.ts)
    const [rec, err] = prepare(name, body, source, true);
    if (rec === undefined) return $multi(err as string, true);
    if (saved.endpoints !== undefined) {
        if (saved.endpoints.length !== rec.endpoints.length) {
            return $multi(`its endpoints list ${saved.endpoints.length} servers, its body ${rec.endpoints.length}`, true);
        }
        // names not resolvable at start (no DNS in init) start from the last good answers of the state file
        // (those allowed_targets still allows)
        for (const [i, eps] of ipairs(rec.endpoints)) {
            const old = saved.endpoints[i - 1];
            if (eps.length === 0 && rec.spec.servers[i - 1].kind === "name") rec.endpoints[i - 1] = allowedOnly(old)[0] ?? [];
        }
    }
    if (saved.etcd !== undefined) rec.etcd = saved.etcd; // cluster mode: the revision it had in etcd
    if (display !== undefined && display !== name && string.lower(display) === name) rec.display = display;
    // the sandbox build of a POST: what every worker will build from this record (quiet about a picker not
    // registered yet: checkBalancer warned, and each worker says so when it builds the upstream)
    const [ver, berr] = tryBuild(rec, true);
    if (ver === undefined) return $multi(berr as string, true);
    const [v, reason, status, before] = commit(name, rec);
    if (v === undefined) return $multi(reason, status !== 429 && status !== 507);
    // restored from the state file: in the history, not audited (a restore, not a change)
    if (saved.restored === true) pcall(recordWrite, "update", name, before, v, STATE_SOURCE, rec);
    else if (source === "conf") auditWrite("update", name, before, v, CONF_SOURCE, rec);
    return $multi(undefined, undefined);
}

function listed<T>(items: T[]): T[] {
    const out: T[] = [];
    for (let i = 1; i <= math.min(items.length, REPORT_MAX); i++) out[i - 1] = items[i - 1];
    return out;
}

/** Loads the state file's records (fresh dict). Never raises for the file's content: nginx always starts. */
function loadState(path: string): { load: StateLoad; skipped: Skipped; loaded: number } {
    const skipped: Skipped = { rejected: [], notLoaded: [] };
    const load = readState(path);
    for (const [, r] of ipairs(load.rejected)) skipped.rejected[skipped.rejected.length] = r;
    let loaded = 0;
    for (const [, e] of ipairs(load.entries)) {
        const [reason, invalid] = applyAtStart(e.name, e.body, e.source, { restored: true, endpoints: e.endpoints, etcd: e.etcd }, e.display);
        if (reason === undefined) {
            loaded = loaded + 1;
        } else if (invalid === true) {
            skipped.rejected[skipped.rejected.length] = { index: e.index, name: e.name, reason };
        } else {
            skipped.notLoaded[skipped.notLoaded.length] = e.name;
            skipped.notLoadedReason = reason;
        }
    }
    for (const [, r] of ipairs(skipped.rejected)) {
        ngx.log(ngx.ALERT, "dyups: state file ", path, ": record ", r.index, r.name !== undefined ? ` (${r.name})` : "",
            " not loaded: ", r.reason);
    }
    if (load.fileError !== undefined) {
        ngx.log(ngx.ALERT, "dyups: state file ", path, " is not usable (", load.fileError, ")",
            load.movedTo !== undefined ? `; moved to ${load.movedTo}` : "", "; starting from upstream_conf");
    }
    for (const [, note] of ipairs(load.notes)) ngx.log(ngx.WARN, "dyups: state file ", path, ": ", note);
    if (skipped.notLoaded.length > 0) {
        ngx.log(ngx.ALERT, "dyups: state file ", path, ": ", skipped.notLoaded.length, " upstreams did not fit and were NOT loaded (",
            skipped.notLoadedReason, "); first: ", table.concat(listed(skipped.notLoaded), " "));
    }
    if (load.text !== undefined && load.fileError === undefined) {
        ngx.log(ngx.NOTICE, "dyups: loaded ", loaded, " upstreams from ", path);
    }
    return { load, skipped, loaded };
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
    prepareStore();
    prepareStateKeys();
    const fit = upstreamsThatFit();
    if (o.max_upstreams === undefined) {
        o.max_upstreams = fit;
    } else if (o.max_upstreams > fit) {
        ngx.log(ngx.WARN, "dyups: max_upstreams ", o.max_upstreams, " is more than shared dict \"", o.dict,
            "\" holds (about ", fit, " one-server upstreams): writes past its budget are refused with 507");
    }

    // Parse the whole file first: a broken file changes nothing and stops nginx.
    let confEntries: { name: string; body: string }[] = [];
    if (o.upstream_conf !== undefined) {
        const [entries, perr] = parseUpstreamFile(readFile(o.upstream_conf), o.upstream_conf);
        if (entries === undefined) fail(perr);
        confEntries = entries;
    }

    const fresh = !booted();
    let seen = confSeen();
    const previous = loadReport() as LuaTable<string, unknown> | undefined;
    let stateReport: unknown = previous !== undefined ? previous.get("state_file") : undefined;
    if (fresh && o.state_file !== undefined) {
        const path = o.state_file;
        const [lok, res] = pcall(loadState, path);
        if (!lok) {
            // a bug, not the file's content: say so, keep the file, start anyway
            ngx.log(ngx.ALERT, "dyups: cannot load the state file ", path, ": ", res, "; starting from upstream_conf");
            stateReport = { path, error: tostring(res) };
        } else {
            const ld = (res as { load: StateLoad }).load;
            const sk = (res as { skipped: Skipped }).skipped;
            let keptAt = ld.movedTo;
            if (ld.text !== undefined && (sk.rejected.length > 0 || sk.notLoaded.length > 0)) {
                // the next save will not have these records: keep the file as it was
                const [to, cerr] = copyAside(path, "kept", ld.text);
                keptAt = to;
                if (to !== undefined) ngx.log(ngx.ALERT, "dyups: state file ", path, " kept as ", to, " (it has records that were not loaded)");
                else ngx.log(ngx.ALERT, "dyups: cannot keep a copy of the state file ", path, ": ", cerr);
            }
            if (ld.confSeen !== undefined) seen = ld.confSeen;
            // (empty lists are left out: Debian's cjson would write them as {})
            stateReport = {
                path, found: ld.text !== undefined || ld.fileError !== undefined, loaded: (res as { loaded: number }).loaded,
                file_error: ld.fileError, kept_at: keptAt, notes: ld.notes.length > 0 ? ld.notes : undefined,
                rejected_count: sk.rejected.length, rejected: sk.rejected.length > 0 ? listed(sk.rejected) : undefined,
                not_loaded_count: sk.notLoaded.length, not_loaded: sk.notLoaded.length > 0 ? listed(sk.notLoaded) : undefined,
                not_loaded_reason: sk.notLoadedReason,
            };
        }
    }
    const confSkipped: string[] = [];
    const skippedNames: LuaTable<string, boolean> = new LuaTable();
    let confReason: string | undefined;
    for (const [, e] of ipairs(confEntries)) {
        const sum = ngx.md5(e.body);
        const lname = string.lower(e.name);
        if (seen.get(lname) !== sum || (fresh && readRecord(lname) === undefined && seen.get(lname) === undefined)) {
            const [reason, invalid] = applyAtStart(lname, e.body, "conf", {}, e.name);
            if (reason !== undefined && invalid === true) fail(`upstream "${e.name}": ${reason}`);
            if (reason !== undefined) {
                confSkipped[confSkipped.length] = lname;
                skippedNames.set(lname, true);
                confReason = reason;
            }
        }
        // a name that did not fit is not marked as applied: the next start or reload tries it again
        if (skippedNames.get(lname) !== true) seen.set(lname, sum);
    }
    if (confSkipped.length > 0) {
        ngx.log(ngx.ALERT, "dyups: upstream_conf ", o.upstream_conf, ": ", confSkipped.length, " upstreams did not fit and were NOT loaded (",
            confReason, "); first: ", table.concat(listed(confSkipped), " "));
    }
    setLoadReport({
        at: ngx.now(), state_file: stateReport,
        upstream_conf: o.upstream_conf === undefined ? undefined
            : {
                path: o.upstream_conf, not_loaded_count: confSkipped.length,
                not_loaded: confSkipped.length > 0 ? listed(confSkipped) : undefined, not_loaded_reason: confReason,
            },
    });
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
    topUpReserve();
    const [cok, cerr] = pcall(clusterTick);
    if (!cok) ngx.log(ngx.ERR, "dyups: cluster tick failed: ", cerr);
    pcall(saveSoon);
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
