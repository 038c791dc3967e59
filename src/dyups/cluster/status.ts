/** @noSelfInFile */
// The `cluster` part of GET /status: where this node stands against etcd. Content phase; O(upstreams)
// (the digest reads every record, like the rest of /status).
//   state          the watcher's: starting, reading (full read), watching, retrying (etcd unreachable or
//                  the watch broke: see last_error), handed over / stopped
//   endpoint       the etcd member the watch is on; endpoints: every configured one
//   revision       the etcd revision up to which this node applied every change of the prefix
//   etcd_revision  the highest etcd revision this node has seen (answers, the check every second)
//   lag            etcd_revision - revision: 0 when this node is caught up (writes to keys outside the prefix
//                  count too, until the next change under it)
//   digest         XOR of crc32("name:etcd revision") over the upstreams here: equal on nodes that route by
//                  the same etcd state
//   upstreams_in_etcd, watcher (pid), since, last_event_at, full_reads, events, last_error(_at),
//   rejected (upstreams etcd holds that this node cannot apply, with the reason), last_write_error
import { ClusterConfig, EtcdEndpoint, LEASE } from "./config";
import { getOptions } from "../options";
import { storedClusterDigest } from "../store/command_log";
import { appliedRevision, etcdCount, lastWriteError, seenRevision, watcherInfo } from "../store/cluster";
import { owner } from "../store/lease";

/** XOR of crc32("name:etcd") over the stored records (see the header): kept by the writers, one shm get. */
export function clusterDigest(): number {
    return storedClusterDigest();
}

export function clusterStatus(): unknown {
    const c = getOptions().cluster as ClusterConfig | undefined;
    if (c === undefined) return undefined;
    const names: string[] = [];
    for (const [i, ep] of ipairs(c.endpoints)) names[i - 1] = (ep as EtcdEndpoint).name;
    const info = watcherInfo();
    const applied = appliedRevision();
    const seen = seenRevision();
    return {
        prefix: c.prefix,
        endpoints: names,
        auth: c.user !== undefined,
        watcher: owner(LEASE),
        state: info !== undefined ? info.state : "starting",
        endpoint: info !== undefined ? info.endpoint : undefined,
        since: info !== undefined ? info.since : undefined,
        revision: applied,
        etcd_revision: seen,
        lag: math.max(0, seen - applied),
        digest: clusterDigest(),
        upstreams_in_etcd: etcdCount(),
        last_event_at: info !== undefined ? info.last_event_at : undefined,
        full_reads: info !== undefined ? info.full_reads : 0,
        events: info !== undefined ? info.events : 0,
        last_error: info !== undefined ? info.last_error : undefined,
        last_error_at: info !== undefined ? info.last_error_at : undefined,
        rejected: info !== undefined ? info.rejected : undefined,
        last_write_error: lastWriteError(),
    };
}
