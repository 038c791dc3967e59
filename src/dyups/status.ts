/** @noSelfInFile */
// GET /status: what an operator needs to see that every worker converged. Content phase only.
// Cost: O(workers) shm reads (the store's counters, one heartbeat per worker), whatever the number of
// upstreams: nothing here lists the dict's keys or decodes records (the DNS part is O(names resolved)).
//   dyups_version  the release version (semver)
//   version        the log's committed version
//   digest         the digest of the stored state (each caught-up worker's digest equals it)
//   upstreams      how many exist
//   workers[]      per worker id: pid, applied version, lag (version - applied), seconds since last report
//   this_worker    the answering worker's registry: upstreams, built, retired versions (refs per current
//                  version only with `withRefs`: a walk of its versions)
//   shm            the dict: capacity, free pages, the configuration budget and its use, headroom, the reserve
//   limits         max_upstreams and how many more upstreams fit
//   state_file     the last save (time, result, error), failures, the last start-up load
//   dns            the resolver's state (dns/status.ts)
//   health         active health checks (health/status.ts); cluster: the etcd watcher (cluster/status.ts)
//   history        the write history: entries and bytes kept, writes it could not record (history.ts)
// this_worker also names the balancers its Lua VM knows (built-in and registered: pickers are per VM).
import { stats } from "./registry/sync";
import { getOptions } from "./options";
import { budgetBytes, ONE_SERVER_BYTES } from "./store/budget";
import { configBytes, currentVersion, reserveExpected, reserveLeft, storedDigest, upstreamCount } from "./store/command_log";
import { pickerNames } from "./balance/pickers";
import { usage } from "./store/dict";
import { lastSave, loadReport, savedVersion, saveFailures } from "./store/state_file";
import { readHeartbeat } from "./store/workers";
import { folderWritable } from "./state/files";
import { dnsStatus } from "./dns/status";
import { healthReport } from "./health/status";
import { clusterStatus } from "./cluster/status";
import { historyStatus } from "./history";
import { VERSION } from "dyups.version";

/** The digest of the stored state (every worker's digest equals it once caught up). One shm get. */
export function stateDigest(): number {
    return storedDigest();
}

function stateFileStatus(version: number): unknown {
    const o = getOptions();
    const report = loadReport();
    if (o.state_file === undefined) return report !== undefined ? { load: report } : undefined;
    const last = lastSave();
    const saved = savedVersion();
    return {
        path: o.state_file,
        strict: o.state_file_strict,
        folder_writable: folderWritable(o.state_file),
        saved_version: saved,
        unsaved_versions: math.max(0, version - saved),
        last_save: last === undefined ? undefined : {
            at: last.at, ok: last.ok, error: last.error, version: last.version, ms: last.ms, bytes: last.bytes,
            seconds_ago: math.max(0, ngx.now() - last.at),
        },
        failures: saveFailures(),
        load: report,
    };
}

export function statusReport(withRefs?: boolean): unknown {
    const version = currentVersion();
    const now = ngx.now();
    const workers: unknown[] = [];
    const count = ngx.worker.count();
    for (let id = 0; id < count; id++) {
        const hb = readHeartbeat(id);
        if (hb !== undefined) {
            workers[workers.length] = {
                id, pid: hb.pid, applied: hb.applied, lag: version - hb.applied, seconds_since_report: now - hb.at,
                digest: hb.digest, retired_versions: hb.retired, lua_kb: hb.luaKb, inflight: hb.inflight,
            };
        }
    }
    const s = stats(withRefs);
    let held: number | undefined;
    if (withRefs === true) {
        held = 0;
        for (const [, r] of pairs(s.refs)) held = held + r;
    }
    const u = usage();
    const n = upstreamCount();
    const budget = budgetBytes();
    const used = configBytes();
    const headroom = math.max(0, budget - used);
    const max = getOptions().max_upstreams ?? 0;
    return {
        dyups_version: VERSION,
        version,
        digest: storedDigest(),
        upstreams: n,
        workers,
        this_worker: {
            id: ngx.worker.id(), pid: ngx.worker.pid(), applied: s.applied, digest: s.digest, upstreams: s.upstreams, built: s.built,
            retired_versions: s.retired, refs_on_current: held, refs_on_retired: s.retiredRefs, balancers: pickerNames(),
        },
        shm: {
            dict: u.name, capacity: u.capacity, free: u.free,
            budget, config_bytes: used, headroom, reserve_keys: reserveLeft(), reserve_keys_expected: reserveExpected(),
        },
        limits: {
            max_upstreams: max,
            upstreams_left: math.max(0, max - n),
            one_server_upstreams_that_fit: math.floor(headroom / ONE_SERVER_BYTES),
        },
        state_file: stateFileStatus(version),
        dns: dnsStatus(),
        health: healthReport(),
        cluster: clusterStatus(),
        history: historyStatus(),
    };
}
