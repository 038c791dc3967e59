/** @noSelfInFile */
// GET /status: what an operator needs to see that every worker converged. Content phase only.
//   dyups_version  the release version (semver)
//   version        the log's committed version
//   digest         the digest of the stored state (each caught-up worker's digest equals it)
//   workers[]      per worker id: pid, applied version, lag (version - applied), seconds since last report
//   this_worker    the answering worker's registry: upstreams, retired versions, refs held; the balancer
//                  names its Lua VM knows (built-in and registered: pickers are registered per VM)
//   shm            capacity and free bytes of the dict
//   dns            the resolver's state (dns/status.ts)
//   history        the write history: entries and bytes kept, writes it could not record (history.ts)
import { revisionHash, stats } from "./registry/sync";
import { pickerNames } from "./balance/pickers";
import { allNames, currentVersion, readRecord, upstreamCount } from "./store/command_log";
import { usage } from "./store/dict";
import { readHeartbeat } from "./store/workers";
import { dnsStatus } from "./dns/status";
import { healthReport } from "./health/status";
import { clusterStatus } from "./cluster/status";
import { historyStatus } from "./history";
import { VERSION } from "dyups.version";

/** The digest of the stored state (every worker's digest equals it once caught up). O(upstreams). */
export function stateDigest(): number {
    let d = 0;
    for (const [, name] of ipairs(allNames())) {
        const rec = readRecord(name);
        if (rec !== undefined) d = d ^ revisionHash(name, rec.rev);
    }
    return d;
}

export function statusReport(): unknown {
    const version = currentVersion();
    const now = ngx.now();
    const workers: unknown[] = [];
    const count = ngx.worker.count();
    for (let id = 0; id < count; id++) {
        const hb = readHeartbeat(id);
        if (hb !== undefined) {
            workers[workers.length] = {
                id, pid: hb.pid, applied: hb.applied, lag: version - hb.applied, seconds_since_report: now - hb.at,
                digest: hb.digest, retired_versions: hb.retired, lua_kb: hb.luaKb,
            };
        }
    }
    const s = stats();
    let held = 0;
    for (const [, r] of pairs(s.refs)) held = held + r;
    const u = usage();
    return {
        dyups_version: VERSION,
        version,
        digest: stateDigest(),
        upstreams: upstreamCount(),
        workers,
        this_worker: {
            id: ngx.worker.id(), pid: ngx.worker.pid(), applied: s.applied, digest: s.digest, upstreams: s.upstreams, built: s.built,
            retired_versions: s.retired, refs_on_current: held, refs_on_retired: s.retiredRefs, balancers: pickerNames(),
        },
        shm: { dict: u.name, capacity: u.capacity, free: u.free },
        dns: dnsStatus(),
        health: healthReport(),
        cluster: clusterStatus(),
        history: historyStatus(),
    };
}
