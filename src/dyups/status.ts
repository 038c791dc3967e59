/** @noSelfInFile */
// GET /status: what an operator needs to see that every worker converged. Content phase only.
//   version        the log's committed version
//   workers[]      per worker id: pid, applied version, lag (version - applied), seconds since last report
//   this_worker    the answering worker's registry: upstreams, retired versions, refs held
//   shm            capacity and free bytes of the dict
import { getOptions } from "./options";
import { revisionHash, stats } from "./registry";
import { allNames, currentVersion, readRecord } from "./store/command_log";
import { COUNT, WORKER_PREFIX } from "./store/keys";
import { shm } from "./store/shm";
import { dnsStatus } from "./dns/status";
import { clusterStatus } from "./cluster/status";

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
    const dict = shm();
    const version = currentVersion();
    const now = ngx.now();
    const workers: unknown[] = [];
    const count = ngx.worker.count();
    for (let id = 0; id < count; id++) {
        const [raw] = dict.get(WORKER_PREFIX + id);
        if (raw !== undefined) {
            const [pid, applied, at, dg, ret, mem] = string.match(raw as string, "^(%d+) (%d+) ([%d%.]+) (%-?%d+) (%d+) (%d+)$");
            const a = tonumber(applied) ?? 0;
            workers[workers.length] = {
                id, pid: tonumber(pid), applied: a, lag: version - a, seconds_since_report: now - (tonumber(at) ?? 0),
                digest: tonumber(dg), retired_versions: tonumber(ret), lua_kb: tonumber(mem),
            };
        }
    }
    const s = stats();
    let held = 0;
    for (const [, r] of pairs(s.refs)) held = held + r;
    const [n] = dict.get(COUNT);
    return {
        version,
        digest: stateDigest(),
        upstreams: (n as number | undefined) ?? 0,
        workers,
        this_worker: {
            id: ngx.worker.id(), pid: ngx.worker.pid(), applied: s.applied, digest: s.digest, upstreams: s.upstreams, built: s.built,
            retired_versions: s.retired, refs_on_current: held, refs_on_retired: s.retiredRefs,
        },
        shm: { dict: getOptions().dict, capacity: dict.capacity(), free: dict.free_space() },
        dns: dnsStatus(),
        cluster: clusterStatus(),
    };
}
