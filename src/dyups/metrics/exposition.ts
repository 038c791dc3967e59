/** @noSelfInFile */
// GET /metrics: the Prometheus text exposition format 0.0.4 (content phase, through the interface's gate).
// Per upstream and per peer (label `peer`: the address) the published counters (metrics/read.ts) and the
// health the balancer sees; per node the configuration and worker state, writes, DNS queries, shm use.
// Only current upstreams and peers are listed: a deleted upstream's series are gone at the next scrape.
// Families and their meaning are listed in FAMILIES below and in the README.
//
// Costs: per upstream a few shm gets (read.ts), one JSON decode per record changed since the last scrape
// (catalog.ts). The scrape yields (ngx.sleep(YIELD)) whenever it ran SLICE seconds without yielding, and sends
// its text in pieces, so a worker keeps serving requests meanwhile; the figures it reports about itself
// (dyups_metrics_scrape_*) are the last families. Lines are assembled from precomputed pieces into one
// buffer per family (the format wants a family's samples together).
import { BOUNDS, BUCKETS, counting } from "./counters";
import { labelValue, pruneCatalog, sortedNames, upstreamInfo } from "./catalog";
import { beginReading, readFigures } from "./read";
import { droppedCount, eventCount, metricsDict, metricsDictUsage } from "../store/metrics";
import { budgetBytes } from "../store/budget";
import { configBytes, currentVersion, upstreamCount } from "../store/command_log";
import { lastSave, savedVersion, saveFailures } from "../store/state_file";
import { usage } from "../store/dict";
import { readHeartbeat } from "../store/workers";
import { getOptions } from "../options";
import { appliedRevision, etcdCount, seenRevision, watcherInfo } from "../store/cluster";
import { VERSION } from "dyups.version";

export const CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8";

/** seconds a scrape may run without yielding */
const SLICE = 0.003;
/**
 * How a long job yields: ngx.sleep(0) would be the shortest, but nginx without OpenResty's delayed-events
 * patch (Debian's) logs a warning at every such call; 1 ms costs little more.
 */
const YIELD = 0.001;
/** upstreams between two clock reads */
const STEP = 8;
/** pieces per ngx.print */
const PRINT_PIECES = 30000;

/** Results the write and DNS counters are listed with (always, zeros included). */
export const WRITE_CODES = [200, 400, 404, 409, 412, 413, 429, 500, 503, 507];
export const DNS_RESULTS = ["ok", "nxdomain", "no_addresses", "timeout", "refused", "servfail", "error"];

interface Family {
    /** position in FAMILIES (a scrape's buffer for it) */
    index: number;
    name: string;
    header: string;
}

/** LuaJIT's string.buffer (OpenResty's LuaJIT and luajit2 since 2.1-2022): appends without table slots. */
interface StrBuf {
    put(this: StrBuf, ...parts: (string | number)[]): StrBuf;
    /** consumes up to len bytes ("" once empty) */
    get(this: StrBuf, len: number): string;
}
interface BufferModule {
    ["new"]: (this: void) => StrBuf;
}
const [hasBuffer, bufferModule] = pcall(require, "string.buffer");
const BUFFERS: BufferModule | undefined = hasBuffer ? (bufferModule as BufferModule) : undefined;
/** bytes per ngx.print when string buffers are used */
const PRINT_BYTES = 262144;

/**
 * One scrape's text, per family (the format wants a family's samples together), and its pacing. The text
 * goes to a string.buffer per family where LuaJIT has them, else to a table of pieces per family.
 */
interface Scrape {
    sbufs: StrBuf[];
    bufs: (string | number)[][];
    ns: number[];
    sliceStart: number;
    maxSlice: number;
}

const FAMILIES: Family[] = [];

function family(name: string, kind: string, help: string): Family {
    const f: Family = { index: FAMILIES.length, name, header: `# HELP ${name} ${help}\n# TYPE ${name} ${kind}\n` };
    FAMILIES[FAMILIES.length] = f;
    return f;
}

// node
const F_INFO = family("dyups_info", "gauge", "dyups for OpenResty: the release version (always 1).");
const F_UPSTREAMS = family("dyups_upstreams", "gauge", "Upstreams that exist.");
const F_CONFIG_VERSION = family("dyups_config_version", "gauge", "The command log's version: the last committed change.");
const F_APPLIED = family("dyups_worker_applied_version", "gauge", "The log version each worker routes by.");
const F_LAG = family("dyups_worker_version_lag", "gauge", "Versions each worker is behind the log (0 once caught up).");
const F_HEARTBEAT = family("dyups_worker_heartbeat_age_seconds", "gauge", "Seconds since each worker last reported.");
const F_LUA_MEM = family("dyups_worker_lua_memory_bytes", "gauge", "Lua heap of each worker, as it last reported.");
const F_WRITES = family("dyups_writes_total", "counter", "Writes through the interface and the Lua API, by HTTP status of the answer.");
const F_DNS = family("dyups_dns_queries_total", "counter", "DNS queries sent by dyups, by result.");
const F_SHM_CAP = family("dyups_shm_capacity_bytes", "gauge", "Capacity of the shared dicts (configuration, metrics).");
const F_SHM_FREE = family("dyups_shm_free_bytes", "gauge", "Free bytes of the shared dicts (free pages only).");
const F_SHM_CONFIG = family("dyups_shm_config_bytes", "gauge", "Bytes the configuration takes in its dict (the writers' estimate by slab class).");
const F_SHM_BUDGET = family("dyups_shm_config_budget_bytes", "gauge", "The configuration's budget in its dict: writes past it are refused with 507.");
const F_SAVE_FAILS = family("dyups_state_saves_failed_total", "counter", "Saves of the state file that failed since start-up.");
const F_SAVE_OK = family("dyups_state_last_save_success", "gauge", "1 when the last save of the state file worked, 0 when it failed.");
const F_SAVE_AT = family("dyups_state_last_save_timestamp_seconds", "gauge", "Time of the last save of the state file (worked or not).");
const F_UNSAVED = family("dyups_state_unsaved_versions", "gauge", "Versions committed since the version last saved to the state file.");
const F_CL_STATE = family("dyups_cluster_state", "gauge", "Cluster mode: 1 for the etcd watcher's current state (starting, reading, watching, retrying, ...).");
const F_CL_REV = family("dyups_cluster_applied_revision", "gauge", "Cluster mode: the etcd revision up to which this node applied every change.");
const F_CL_ETCD = family("dyups_cluster_etcd_revision", "gauge", "Cluster mode: the highest etcd revision this node has seen.");
const F_CL_LAG = family("dyups_cluster_lag_revisions", "gauge", "Cluster mode: etcd revision seen - revision applied (0: caught up).");
const F_CL_COUNT = family("dyups_cluster_etcd_upstreams", "gauge", "Cluster mode: upstream keys etcd held at the watcher's last check.");
const F_CL_EVENTS = family("dyups_cluster_events_total", "counter", "Cluster mode: watch events the current watcher applied.");
const F_CL_READS = family("dyups_cluster_full_reads_total", "counter", "Cluster mode: full reads of the prefix by the current watcher.");
const F_CL_REJECTED = family("dyups_cluster_rejected_upstreams", "gauge", "Cluster mode: upstreams etcd holds that this node cannot apply.");
const F_DROPPED = family("dyups_metrics_dropped_total", "counter", "Counter updates dropped because the metrics dict was full.");
// upstreams
const F_U_REQ = family("dyups_upstream_requests_total", "counter", "Client requests routed to the upstream, counted when they end.");
const F_U_RESP = family("dyups_upstream_responses_total", "counter", "Responses to those requests by status class, as the client got them.");
const F_U_RETRY = family("dyups_upstream_retries_total", "counter", "Tries after a request's first one (proxy_next_upstream).");
const F_U_TIME = family("dyups_upstream_response_seconds", "histogram", "Seconds from a request's first try to its end, for requests that reached a peer.");
const F_U_UP = family("dyups_upstream_peers_up", "gauge", "Peers of the upstream the balancer may pick now.");
// peers
const F_P_REQ = family("dyups_peer_requests_total", "counter", "Tries sent to the peer (each retry counts at its peer).");
const F_P_RESP = family("dyups_peer_responses_total", "counter", "Responses of the peer by status class.");
const F_P_FAIL = family("dyups_peer_failures_total", "counter", "Tries that got no response: connect (no connection) or read (connected, no valid response header).");
const F_P_ACTIVE = family("dyups_peer_active_connections", "gauge", "Tries in flight to the peer (published about once a second).");
const F_P_UP = family("dyups_peer_up", "gauge", "1 when the balancer may pick the peer now: not down, not drained, not failed (max_fails), not held down by its check.");
const F_P_FAILED = family("dyups_peer_passive_failed", "gauge", "1 while passive health (max_fails within fail_timeout) holds the peer out.");
const F_P_CHECK = family("dyups_peer_check_up", "gauge", "Active health check state of the peer: 1 up, 0 down (checked peers only).");
// the scrape itself
const F_DURATION = family("dyups_metrics_scrape_duration_seconds", "gauge", "Seconds this scrape took until this line.");
const F_SLICE = family("dyups_metrics_scrape_max_slice_seconds", "gauge", "Longest run of this scrape without yielding to other requests.");

/** The closing pieces of label sets: "} ", ',code="2xx"} ', ',le="0.005"} ', ... ; " " for no labels */
const CLOSE = "} ";
const BARE = " ";
const CODE_CLOSE = [',code="1xx"} ', ',code="2xx"} ', ',code="3xx"} ', ',code="4xx"} ', ',code="5xx"} '];
const LE_CLOSE: string[] = [];
for (let b = 1; b <= BUCKETS; b++) LE_CLOSE[b - 1] = b < BUCKETS ? `,le="${BOUNDS[b - 1]}"} ` : ',le="+Inf"} ';
const CONNECT_CLOSE = ',type="connect"} ';
const READ_CLOSE = ',type="read"} ';
const BUCKET_NAME = F_U_TIME.name + "_bucket";
const SUM_NAME = F_U_TIME.name + "_sum";
const COUNT_NAME = F_U_TIME.name + "_count";

function put(s: Scrape, f: Family, name: string, open: string, close: string, value: number | string): void {
    if (BUFFERS !== undefined) {
        s.sbufs[f.index].put(name, open, close, value, "\n");
        return;
    }
    const buf = s.bufs[f.index];
    const n = s.ns[f.index];
    buf[n] = name;
    buf[n + 1] = open;
    buf[n + 2] = close;
    buf[n + 3] = value;
    buf[n + 4] = "\n";
    s.ns[f.index] = n + 5;
}

function sample(s: Scrape, f: Family, open: string, close: string, value: number | string): void {
    put(s, f, f.name, open, close, value);
}

/** Yields when the scrape ran SLICE seconds since its last yield. */
function pace(s: Scrape): void {
    ngx.update_time();
    const ran = ngx.now() - s.sliceStart;
    if (ran < SLICE) return;
    if (ran > s.maxSlice) s.maxSlice = ran;
    ngx.sleep(YIELD);
    ngx.update_time();
    s.sliceStart = ngx.now();
}

function nodeFamilies(s: Scrape, now: number): void {
    sample(s, F_INFO, `{version="${labelValue(VERSION)}"`, CLOSE, 1);
    sample(s, F_UPSTREAMS, "", BARE, upstreamCount());
    const version = currentVersion();
    sample(s, F_CONFIG_VERSION, "", BARE, version);
    for (let id = 0; id < ngx.worker.count(); id++) {
        const hb = readHeartbeat(id);
        if (hb !== undefined) {
            const open = `{worker="${id}"`;
            sample(s, F_APPLIED, open, CLOSE, hb.applied);
            sample(s, F_LAG, open, CLOSE, math.max(0, version - hb.applied));
            sample(s, F_HEARTBEAT, open, CLOSE, math.max(0, now - hb.at));
            sample(s, F_LUA_MEM, open, CLOSE, hb.luaKb * 1024);
        }
    }
    for (const [, code] of ipairs(WRITE_CODES)) sample(s, F_WRITES, `{code="${code}"`, CLOSE, eventCount("write", code));
    for (const [, r] of ipairs(DNS_RESULTS)) sample(s, F_DNS, `{result="${r}"`, CLOSE, eventCount("dns", r));
    const u = usage();
    const open = `{dict="${labelValue(u.name)}"`;
    sample(s, F_SHM_CAP, open, CLOSE, u.capacity);
    sample(s, F_SHM_FREE, open, CLOSE, u.free);
    sample(s, F_SHM_CONFIG, open, CLOSE, configBytes());
    sample(s, F_SHM_BUDGET, open, CLOSE, budgetBytes());
    if (getOptions().state_file !== undefined) {
        sample(s, F_SAVE_FAILS, "", BARE, saveFailures());
        const last = lastSave();
        if (last !== undefined) {
            sample(s, F_SAVE_OK, "", BARE, last.ok ? 1 : 0);
            sample(s, F_SAVE_AT, "", BARE, last.at);
        }
        sample(s, F_UNSAVED, "", BARE, math.max(0, version - savedVersion()));
    }
    if (getOptions().cluster !== undefined) clusterFamilies(s);
    const [cap, free] = metricsDictUsage();
    if (cap !== undefined) {
        const mopen = `{dict="${labelValue(getOptions().metrics_dict)}"`;
        sample(s, F_SHM_CAP, mopen, CLOSE, cap);
        sample(s, F_SHM_FREE, mopen, CLOSE, free as number);
        sample(s, F_DROPPED, "", BARE, droppedCount());
    }
}

/** Cluster mode (cluster/): where this node stands against etcd, as the `cluster` part of /status says. */
function clusterFamilies(s: Scrape): void {
    const info = watcherInfo();
    const applied = appliedRevision();
    const seen = seenRevision();
    sample(s, F_CL_STATE, `{state="${labelValue(info !== undefined ? info.state : "starting")}"`, CLOSE, 1);
    sample(s, F_CL_REV, "", BARE, applied);
    sample(s, F_CL_ETCD, "", BARE, seen);
    sample(s, F_CL_LAG, "", BARE, math.max(0, seen - applied));
    const n = etcdCount();
    if (n !== undefined) sample(s, F_CL_COUNT, "", BARE, n);
    sample(s, F_CL_EVENTS, "", BARE, info !== undefined ? info.events : 0);
    sample(s, F_CL_READS, "", BARE, info !== undefined ? info.full_reads : 0);
    let rejected = 0;
    if (info !== undefined && info.rejected !== undefined && type(info.rejected) === "table") {
        for (const [,] of pairs(info.rejected)) rejected = rejected + 1;
    }
    sample(s, F_CL_REJECTED, "", BARE, rejected);
}

function upstreamFamilies(s: Scrape, d: NgxSharedDict | undefined, traffic: boolean, name: string, now: number): void {
    const info = upstreamInfo(name);
    if (info === undefined) return;
    const fig = readFigures(d, info, now);
    const uopen = info.label;
    if (traffic) {
        sample(s, F_U_REQ, uopen, CLOSE, fig.requests);
        for (let k = 1; k <= 5; k++) {
            const v = fig.classes[k - 1];
            if (v > 0) sample(s, F_U_RESP, uopen, CODE_CLOSE[k - 1], v);
        }
        sample(s, F_U_RETRY, uopen, CLOSE, fig.retries);
        if (fig.count > 0) {
            let cum = 0;
            for (let b = 1; b <= BUCKETS; b++) {
                cum = cum + fig.buckets[b - 1];
                put(s, F_U_TIME, BUCKET_NAME, uopen, LE_CLOSE[b - 1], cum);
            }
            put(s, F_U_TIME, SUM_NAME, uopen, CLOSE, fig.sum);
            put(s, F_U_TIME, COUNT_NAME, uopen, CLOSE, fig.count);
        }
    }
    sample(s, F_U_UP, uopen, CLOSE, fig.peersUp);
    for (const [i, p] of ipairs(info.peers)) {
        const pf = fig.peers[i - 1];
        const popen = p.label;
        if (traffic) {
            sample(s, F_P_REQ, popen, CLOSE, pf.tries);
            for (let k = 1; k <= 5; k++) {
                const v = pf.classes[k - 1];
                if (v > 0) sample(s, F_P_RESP, popen, CODE_CLOSE[k - 1], v);
            }
            if (pf.connectFailures > 0) sample(s, F_P_FAIL, popen, CONNECT_CLOSE, pf.connectFailures);
            if (pf.readFailures > 0) sample(s, F_P_FAIL, popen, READ_CLOSE, pf.readFailures);
            sample(s, F_P_ACTIVE, popen, CLOSE, pf.active);
        }
        sample(s, F_P_UP, popen, CLOSE, pf.up ? 1 : 0);
        sample(s, F_P_FAILED, popen, CLOSE, pf.failed ? 1 : 0);
        if (pf.check !== undefined) sample(s, F_P_CHECK, popen, CLOSE, pf.check === "up" ? 1 : 0);
    }
}

/** Sends every family, in order, in pieces (yielding between them). */
function send(s: Scrape): void {
    for (const [, f] of ipairs(FAMILIES)) {
        if (BUFFERS !== undefined) {
            const buf = s.sbufs[f.index];
            let chunk = buf.get(PRINT_BYTES);
            if (chunk !== "") ngx.print(f.header);
            while (chunk !== "") {
                ngx.print(chunk);
                pace(s);
                chunk = buf.get(PRINT_BYTES);
            }
            continue;
        }
        const n = s.ns[f.index];
        if (n > 0) {
            ngx.print(f.header);
            const buf = s.bufs[f.index];
            for (let i = 1; i <= n; i = i + PRINT_PIECES) {
                ngx.print(table.concat(buf, "", i, math.min(n, i + PRINT_PIECES - 1)));
                pace(s);
            }
        }
    }
}

/** The exposition text as a content handler (GET /metrics). */
export function metricsPage(): void {
    ngx.update_time();
    const started = ngx.now();
    const s: Scrape = { sbufs: [], bufs: [], ns: [], sliceStart: started, maxSlice: 0 };
    for (const [i] of ipairs(FAMILIES)) {
        if (BUFFERS !== undefined) s.sbufs[i - 1] = BUFFERS.new();
        else s.bufs[i - 1] = [];
        s.ns[i - 1] = 0;
    }
    pruneCatalog();
    const traffic = counting();
    const d = traffic ? metricsDict() : undefined;
    nodeFamilies(s, started);
    beginReading();
    const names = sortedNames();
    for (const [i, name] of ipairs(names)) {
        upstreamFamilies(s, d, traffic, name, started);
        if (i % STEP === 0) pace(s);
    }
    ngx.status = 200;
    ngx.header["Content-Type"] = CONTENT_TYPE;
    ngx.header["Cache-Control"] = "no-store";
    send(s); // F_DURATION and F_SLICE have no samples yet: they are written last, after the rest was sent
    ngx.update_time();
    const t = ngx.now();
    if (t - s.sliceStart > s.maxSlice) s.maxSlice = t - s.sliceStart;
    ngx.print(F_DURATION.header, F_DURATION.name, " ", t - started, "\n", F_SLICE.header, F_SLICE.name, " ", s.maxSlice, "\n");
    ngx.exit(ngx.HTTP_OK);
}
