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
//   sf:last      string   the last save: "<at> <ok 1|0> <version> <ms> <bytes> <error>", padded to SAVE_LEN bytes
//                          (in place). Written by the saving worker; read by GET /status. Resident.
//   sf:fails     number   how many saves failed since start-up (the metrics export it). Resident.
//   sf:load      string   JSON report of the last start-up load (state file and upstream_conf): loaded,
//                          rejected records with reasons, what did not fit, where the file was kept. Written
//                          once by init() on a fresh dict; kept across reloads (GET /status shows it).
// Passive peer health (store/peer_health.ts); <peer> is the endpoint id "host:port", "[v6]:port" or "unix:/p"
//   f:<peer>     number   passive failures of the peer; TTL fail_timeout (2 x fail_timeout once marked down).
//   d:<peer>     number   peer marked failed (max_fails reached) until this time (ngx.now()); TTL fail_timeout.
//   hg           number   health generation: incremented after every change of f:* or d:* by a failure, so
//                          workers cache both and re-read them only when it moves (one get per request).
//   k:<peer>     number   active requests to the peer across workers (least_conn, random two, max_conns);
//                          deleted when it falls to 0.
// DNS (store/dns.ts)
//   dns:q:<key>  string   JSON QueryState of one DNS query (dyups.dns.policy): last good answer, TTL, next
//                          refresh time, error, stale-since. <key> is "a:<host>" (A, else AAAA) or
//                          "srv:<_svc._tcp.host>". Written by the dns lease holder only; expires (next +
//                          dns_stale_ttl + 300 s) unless refreshed, so a query nobody needs goes away on its own.
//   dns:names    string   JSON object { <key>: [upstream names] }: the queries in use (read by /status).

export const VERSION = "v";
export const CMD_PREFIX = "c:";
export const UPSTREAM_PREFIX = "u:";
export const COUNT = "n";
export const RECORD_PREFIX = "r:";
export const DIGEST = "dg";
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
export const FAILS_PREFIX = "f:";
export const DOWN_PREFIX = "d:";
export const CONNS_PREFIX = "k:";
export const HEALTH_GEN = "hg";
export const DNS_QUERY_PREFIX = "dns:q:";
export const DNS_NAMES = "dns:names";

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

/** How many log entries stay readable for incremental catch-up. */
export const LOG_KEEP = 1024;
