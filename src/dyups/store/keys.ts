/** @noSelfInFile */
// The key catalogue: every key this product writes in its lua_shared_dict, defined once, with its value
// type and lifetime. Only modules under store/ import this file (and the specs that inspect the dict).
//
// Configuration (store/command_log.ts) — never evicted: every write in this dict is safe_set/safe_add, an
// in-place overwrite of a value of the same size, or an incr of an existing number (none of them evicts).
// "Resident" keys are created at start-up (store/command_log.ts prepareStore) and only ever overwritten in
// place afterwards, so writing them never needs memory: a full dict can always be emptied.
//   v            number   log version: the last committed change. Only ever incremented (incr), never a clock.
//                          Resident.
//   c:<v>        string   the name of the upstream changed by version v. Kept for LOG_KEEP versions
//                          (the writer deletes c:<v-LOG_KEEP>); a reader further behind rebuilds from u:*.
//                          Missing for a version committed while the dict was full (the journal j stands in
//                          for the newest one; a reader that misses an older one rebuilds).
//   u:<name>     number   the upstream's pointer: the slot of its current record r:<name>@<slot>. Flags: the
//                          version that created it (listing order survives replaces). An 8-byte number, so
//                          moving it to a new slot is an in-place write that cannot fail. Absent once deleted.
//                          (A string here is a whole record in the layout before pointers: read as such.)
//   r:<name>@<slot> string  JSON UpstreamRecord. Written once under a fresh key (safe_add): a write that does
//                          not fit fails before the pointer moves, so the old record, the log and every worker
//                          stay as they were. Deleted after the pointer moved on (or with the upstream).
//                          <slot> is the version that wrote the key; the record's own rev can be newer (a
//                          shrinking write into a full dict overwrites its slot in place, padded to the same
//                          length, which needs no allocation).
//   n            number   how many u:* keys exist (kept under the write lease, for the max_upstreams limit). Resident.
//   dg           number   digest of the stored state: XOR of revisionHash(name, rev) (dyups.digest) over every
//                          upstream, kept by the writer under the write lease (GET /status reads one key). Resident.
//   cdg          number   the cluster digest of the stored state: XOR of crc32("<name>:<etcd revision>") over every
//                          upstream (0 for records that have none), kept like dg (cluster/status.ts shows it). Resident.
//   cb           number   configuration bytes: the slab memory u:*, r:* and c:* take (estimated per key from its
//                          size class, store/budget.ts), kept by the writer; compared with the budget. Resident.
//   j            string   the journal: "<nv> <op> <oldslot> <name>" of the change in progress, padded to
//                          JOURNAL_LEN bytes so each commit overwrites it in place; recover() reads it to finish
//                          or drop the change of a writer killed mid-commit. Resident.
//   rsv:<i>      number   the reserve: RESERVE_KEYS keys in the write lease's slab class (128 bytes). When the
//                          dict is so full that the write lease cannot be added, a writer deletes one and takes
//                          the lease in the chunk it freed; refilled after the write. Resident unless in use.
// Start-up (store/boot.ts)
//   boot         string   "1" once init() loaded upstream_conf / the state file into this dict (survives reload).
//   confseen     string   JSON object name -> md5 of the upstream_conf body last applied (start-up precedence).
// Leases (store/lease.ts): one holder per job; the value is the holder's pid, with a TTL
//   lease:<job>        number  jobs: write (the writers' lock, TTL lock_timeout + 2 s), state_file (10 s),
//                              dns (max(2 s, 3 sync_interval), renewed every tick). A dead holder is taken over.
//   lease:<job>:x<pid> number  takeover guard of a dead holder's lease (TTL of the lease).
// Workers (store/workers.ts)
//   w:<id>       string   heartbeat of worker <id>: "pid applied time digest retired luaKB" (encoded and
//                          decoded only in store/workers.ts), padded to a fixed length so each report
//                          overwrites it in place. Never expires (a respawned worker reuses its id).
// State file (store/state_file.ts)
//   sf:saved     number   the version last written to the state file. Resident once written.
//   sf:next      number   earliest time (ngx.now()) of the next save: 4x the last save's duration after it, so
//                          that a large state changing fast (a node loading 10 000 upstreams) is not rewritten
//                          after every tick; pushed on by a bulk load in progress (deferSave). TTL 60 s.
//   sf:last      string   the last save: "<at> <ok 1|0> <version> <ms> <bytes> <error>", padded to SAVE_LEN bytes
//                          (in place). Written by the saving worker; read by GET /status. Resident.
//   sf:fails     number   how many saves failed since start-up (the metrics export it). Resident.
//   sf:load      string   JSON report of the last start-up load (state file and upstream_conf): loaded,
//                          rejected records with reasons, what did not fit, where the file was kept. Written
//                          once by init() on a fresh dict; kept across reloads (GET /status shows it).
// Passive peer health (store/peer_health.ts), per server entry <e> = "<upstream>/<address>#<n>" (the n-th
// peer of that upstream with that address: "u/10.0.0.1:80#1"), never shared by two upstreams or two entries:
//   f:<e>        number   nginx's `fails` of the entry. TTL 3600 s + fail_timeout, renewed by each failure.
//   fa:<e>       number   nginx's `accessed`: the time (ngx.now()) of its last failure. Same TTL.
//   fc:<e>       number   nginx's `checked`: the time of its last failure, or of a pick made more than
//                          fail_timeout after the previous `checked`. Same TTL, renewed when set.
//                          f:/fa:/fc: are deleted together by a success with fa < fc (nginx's reset), and by
//                          the writer when an update or delete removes the entry (released with it).
//   hg           number   health generation: incremented after every change of f:/fa:/fc: (and of active check
//                          states), so workers cache them and re-read only when it moves (one get per request).
//                          Resident (created by prepareStore).
//   k:<e>        number   active requests to the entry across workers (least_conn, random two, max_conns,
//                          drain); deleted when it falls to 0.
//   (all created with safe_add/safe_set, never incr's init value or set: those evict keys from a full dict)
// Latency-aware balancing (store/ewma.ts), per server entry <e> of an upstream with `balancer ewma`:
//   ew:<e>       string   "<score> <stamp>": a worker's peak-EWMA of the entry's response times (seconds) and
//                          the time (ngx.now()) it was last updated. Written by each worker's timer at most once
//                          a second when it had outcomes (last writer wins); read when a worker builds a version,
//                          never per request. TTL 20 half-lives, at least 60 s (then the score is negligible).
// DNS (store/dns.ts)
//   dns:q:<key>  string   JSON QueryState of one DNS query (dyups.dns.policy): last good answer, TTL, next
//                          refresh time, error, stale-since. <key> is "a:<host>" (A, else AAAA) or
//                          "srv:<_svc._tcp.host>". Written by the dns lease holder only; expires (next +
//                          dns_stale_ttl + 300 s) unless refreshed, so a query nobody needs goes away on its own.
//   dns:names    string   JSON object { <key>: [upstream names] }: the queries in use (read by /status).
// Interface access (store/auth.ts)
//   af:<client>  number   failed authentications at the HTTP interface from <client> (an IPv4 address, an
//                          IPv6 /64 as "v6:<16 hex digits>", or "unix:") in the current window.
//                          Created by safe_add with TTL auth_fail_window at the first failure and never
//                          extended, so it is gone one window after that failure; at auth_fail_limit the
//                          client's requests are refused (429) until it expires.
// Active health checks (store/health.ts)
//   hc:s:<id>    string   health state of one checked peer (health/state.ts encoding: up/down, rise/fall counters,
//                          since, last probe, probes, failures, last error). <id> = "<config id>/<host:port>"
//                          (health/config.ts): peer address + check configuration. Written by the prober after
//                          every probe; deleted by it a few seconds after no upstream lists the peer any more;
//                          TTL 2 x interval + timeout + 60 s as a safety net (a prober that died mid-release).
//   hc:d:<id>    number   1 = down, 0 = up: the only part the balancer reads (through the per-worker health cache,
//                          re-read when `hg` moves). Written with hc:s on creation and on every up/down change,
//                          which then bumps `hg`. Same lifetime as hc:s.
//   hc:gen       number   configuration generation shown on the check_status page: incremented by init() at
//                          every start and reload (the module's zone generation). Never expires.
//   hc:p         string   JSON of the prober's figures (pid, targets, probes/s, lag percentiles, in flight),
//                          rewritten by the prober about once a second; TTL 10 s.
//   (the prober holds the lease `health`: one worker probes for the node)
// Cluster mode (store/cluster.ts)
//   cl:t:<name>  number   the etcd revision at which upstream <name> was deleted here, so that an older event of
//                          that name (a late watch event, a writer's own write that lost the race) never brings
//                          it back. Written under the write lease (the commit guard); TTL CLUSTER_TOMB_TTL.
//   cl:applied   number   the etcd revision up to which this node applied every change of the prefix (the
//                          watcher's position). Written by the watcher only; no TTL.
//   cl:etcd      number   the highest etcd revision any worker of this node has seen (answers' headers). Only
//                          grows while nginx runs; no TTL.
//   cl:count     number   how many upstream keys etcd held at the watcher's last check.
//   cl:id        string   the etcd cluster id of the last full read (another id: etcd was replaced).
//   cl:info      string   JSON of the watcher's state for /status (state, endpoint, since, last event, counters,
//                          last error). Written by the watcher only.
//   cl:werr      string   JSON { error, at } of the last failed write to etcd (any worker).
//   (the watcher holds the lease `cluster`: one worker per node follows etcd)
//
// Metrics (store/metrics.ts), in their own dict (option metrics_dict, default "dyups_metrics"), so that
// counters can never take the configuration's space. Every counter is a number that workers add their
// deltas to (incr); it is created with safe_add (never evicts: a full metrics dict drops the delta and
// counts it in mx:dropped). No TTL: each lives until deleted as said.
//   m:<name>|<peer>|<i>  number  counter i of peer <peer> (endpoint id) of upstream <name> (metrics/counters.ts
//                                P_*: tries, finished tries, responses by class, connect/read failures).
//                                Deleted by each worker that counted it, once it sees the peer leave the
//                                upstream or the upstream deleted (it publishes nothing for it after that).
//   m:<name>||<i>        number  counter i of upstream <name> (U_*: requests, retries, responses by class,
//                                response-time sum and buckets). Deleted like the peer counters.
//   mw:<code>            number  writes through the write pipeline (interface, Lua API) by HTTP status.
//   md:<result>          number  DNS queries by result (ok, nxdomain, no_addresses, timeout, error).
//   mx:dropped           number  counter deltas dropped because the metrics dict was full.
// Write history (store/history.ts): the last `history_size` accepted writes, in at most an eighth of the dict (left out of the configuration budget).
// Lives as long as the dict (survives reload, not restart: revisions start again at a restart). Written
// under the lease `history` with safe_set: never evicts configuration; a write it cannot record is counted.
//   h:seq        number   sequence number of the newest entry (0: none). Only grows while the dict lives.
//   h:first      number   sequence number of the oldest entry kept: entries h:first..h:seq exist.
//   h:bytes      number   bytes of the kept entries' values (held under the budget).
//   h:<seq>      string   JSON of one history entry (history.ts HistoryEntry; its seq is the key's).
//                          Deleted when it falls out of the window (count or bytes).
//   h:lost       number   writes that could not be recorded (lock not obtained, dict full): /status.
//   h:cut        number   entries recorded without their body (larger than the history's byte budget).

export const VERSION = "v";
export const CMD_PREFIX = "c:";
export const UPSTREAM_PREFIX = "u:";
export const COUNT = "n";
export const RECORD_PREFIX = "r:";
export const DIGEST = "dg";
export const CLUSTER_DIGEST = "cdg";
export const CONFIG_BYTES = "cb";
export const JOURNAL = "j";
export const RESERVE_PREFIX = "rsv:";
export const SAVE_LAST = "sf:last";
export const SAVE_FAILS = "sf:fails";
export const LOAD_REPORT = "sf:load";
export const BOOT = "boot";
export const CONF_SEEN = "confseen";
export const LEASE_PREFIX = "lease:";
export const WORKER_PREFIX = "w:";
export const STATE_SAVED = "sf:saved";
export const STATE_NEXT = "sf:next";
export const FAILS_PREFIX = "f:";
export const ACCESSED_PREFIX = "fa:";
export const CHECKED_PREFIX = "fc:";
export const CONNS_PREFIX = "k:";
export const HEALTH_GEN = "hg";
export const EWMA_PREFIX = "ew:";
export const DNS_QUERY_PREFIX = "dns:q:";
export const DNS_NAMES = "dns:names";
export const AUTH_FAIL_PREFIX = "af:";

/** Lease names (lease:<job>). */
export const WRITE_LEASE = "write";
export const STATE_FILE_LEASE = "state_file";
/** The writers' lock key (specs hold it to simulate a busy writer). */
export const LOCK = LEASE_PREFIX + WRITE_LEASE;

/** The journal's fixed length (a name is at most 128 bytes; versions and slots at most 16 digits each). */
export const JOURNAL_LEN = 176;
/** The last-save record's fixed length (the error is cut to fit). */
export const SAVE_LEN = 320;
/** Reserve keys kept for the write lease in a full dict. */
export const RESERVE_KEYS = 2;
export const HEALTH_STATE_PREFIX = "hc:s:";
export const HEALTH_DOWN_PREFIX = "hc:d:";
export const HEALTH_CONF_GEN = "hc:gen";
export const HEALTH_PROBER = "hc:p";
export const CLUSTER_TOMB_PREFIX = "cl:t:";
export const CLUSTER_APPLIED = "cl:applied";
export const CLUSTER_ETCD_REV = "cl:etcd";
export const CLUSTER_COUNT = "cl:count";
export const CLUSTER_ID = "cl:id";
export const CLUSTER_INFO = "cl:info";
export const CLUSTER_WRITE_ERROR = "cl:werr";
/** seconds a cluster tombstone (cl:t:<name>) is kept */
export const CLUSTER_TOMB_TTL = 3600;

export const METRIC_PREFIX = "m:";
export const METRIC_WRITES_PREFIX = "mw:";
export const METRIC_DNS_PREFIX = "md:";
export const METRIC_DROPPED = "mx:dropped";

export const HISTORY_SEQ = "h:seq";
export const HISTORY_FIRST = "h:first";
export const HISTORY_BYTES = "h:bytes";
export const HISTORY_PREFIX = "h:";
export const HISTORY_LOST = "h:lost";
export const HISTORY_CUT = "h:cut";
export const HISTORY_LEASE = "history";

/** How many log entries stay readable for incremental catch-up. */
export const LOG_KEEP = 1024;
