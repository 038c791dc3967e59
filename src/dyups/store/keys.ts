/** @noSelfInFile */
// Every key this product writes in its lua_shared_dict, in one place. Values, types and lifetimes:
//
//   v            number   log version: the last committed change. Only ever incremented (incr), never a clock.
//   c:<v>        string   the name of the upstream changed by version v. Kept for LOG_KEEP versions
//                          (the writer deletes c:<v-LOG_KEEP>); a reader further behind rebuilds from u:*.
//   u:<name>     string   JSON UpstreamRecord: the current full state of one upstream; absent once deleted.
//   n            number   how many u:* keys exist (kept under the write lock, for the max_upstreams limit).
//   lock         number   the writers' lock: the holder's pid, with a TTL so a dead holder cannot wedge writes.
//   boot         string   "1" once init() loaded upstream_conf / the state file into this dict (survives reload).
//   confseen     string   JSON array of the names upstream_conf has defined so far (see init's precedence rule).
//   w:<id>       string   "pid version time" of worker <id>: the version it has applied (sync observability).
//   sf:saved     number   the version last written to the state file.
//   sf:owner     number   pid of the worker writing the state file now (TTL).
//   sf:next      number   earliest time (ngx.now()) of the next save: 4x the last save's duration after it, so
//                          that a large state changing fast (a node loading 10 000 upstreams) is not rewritten
//                          after every tick; pushed on by a bulk load in progress (deferSave). TTL 60 s.
//   f:<peer>     number   passive failures of peer address <peer> ("host:port"); TTL fail_timeout (or 2x when down).
//   d:<peer>     number   peer marked failed (max_fails reached) until this time (ngx.now()); TTL fail_timeout.
//   hg           number   health generation: incremented after every change of f:* or d:* by a failure, so
//                          workers cache both and re-read them only when it moves (one get per request).
//   k:<peer>     number   active requests to the peer across workers (least_conn, random two, max_conns).
//   dns:owner    number   pid of the worker that resolves names now (dyups.dns.refresh); TTL ownerTtl()
//                          = max(2 s, 3 sync_interval), renewed every tick while that worker lives; a dead owner's key expires
//                          and the next worker's dict:add takes over.
//   dns:q:<key>  string   JSON QueryState of one DNS query (dyups.dns.policy): last good answer, TTL, next
//                          refresh time, error, stale-since. <key> is "a:<host>" (A, else AAAA) or
//                          "srv:<_svc._tcp.host>". Written by the owner only; expires (next + dns_stale_ttl +
//                          300 s) unless refreshed, so a query nobody needs any more goes away on its own.
//   dns:names    string   JSON object { <key>: [upstream names] }: the queries in use (owner; read by /status).
//   hc:*                  owned by the health checker.
//   cl:t:<name>  number   cluster mode (store/cluster.ts): the etcd revision at which upstream <name> was deleted
//                          here, so that an older event of that name (a late watch event, a writer's own
//                          write that lost the race) never brings it back. Written under the command log's
//                          lock (the commit guard); TTL CLUSTER_TOMB_TTL.
//   cl:applied   number   cluster mode: the etcd revision up to which this node applied every change of the
//                          prefix (the watcher's position). Written by the watcher only; no TTL.
//   cl:etcd      number   cluster mode: the highest etcd revision any worker of this node has seen (answers'
//                          headers). Only grows while nginx runs; no TTL.
//   cl:count     number   cluster mode: how many upstream keys etcd held at the watcher's last check.
//   cl:id        string   cluster mode: the etcd cluster id of the last full read (another id: etcd was replaced).
//   cl:info      string   cluster mode: JSON of the watcher's state for /status (state, endpoint, since,
//                          last event, counters, last error). Written by the watcher only.
//   cl:werr      string   cluster mode: JSON { error, at } of the last failed write to etcd (any worker).
//   lease:cluster          the cluster watcher's lease (store/lease.ts).
// Peer state is keyed by address, not by version, so it survives replacing the upstream.

export const VERSION = "v";
export const CMD_PREFIX = "c:";
export const UPSTREAM_PREFIX = "u:";
export const COUNT = "n";
export const LOCK = "lock";
export const BOOT = "boot";
export const CONF_SEEN = "confseen";
export const WORKER_PREFIX = "w:";
export const STATE_SAVED = "sf:saved";
export const STATE_OWNER = "sf:owner";
export const STATE_NEXT = "sf:next";
export const FAILS_PREFIX = "f:";
export const DOWN_PREFIX = "d:";
export const CONNS_PREFIX = "k:";
export const HEALTH_GEN = "hg";
export const DNS_OWNER = "dns:owner";
export const DNS_QUERY_PREFIX = "dns:q:";
export const DNS_NAMES = "dns:names";
export const LEASE_PREFIX = "lease:";
export const CLUSTER_TOMB_PREFIX = "cl:t:";
export const CLUSTER_APPLIED = "cl:applied";
export const CLUSTER_ETCD_REV = "cl:etcd";
export const CLUSTER_COUNT = "cl:count";
export const CLUSTER_ID = "cl:id";
export const CLUSTER_INFO = "cl:info";
export const CLUSTER_WRITE_ERROR = "cl:werr";
/** seconds a cluster tombstone (cl:t:<name>) is kept */
export const CLUSTER_TOMB_TTL = 3600;

/** How many log entries stay readable for incremental catch-up. */
export const LOG_KEEP = 1024;
