/** @noSelfInFile */
// init() options: defaults, validation, and the one table every module reads. Runs in init_by_lua (master);
// workers inherit the validated table. A bad option raises at start-up, so nginx refuses to start with the
// reason (a caller's mistake, not a run-time failure).
import { ClusterConfig, validateCluster } from "./cluster/config";

// A type alias, not an interface: it is then comparable to the record that validateOptions builds key by key.
export type Options = {
    /** the lua_shared_dict holding the command log and peer state */
    dict: string;
    /** file of nginx-syntax `upstream NAME { ... }` blocks: the initial upstreams */
    upstream_conf?: string;
    /** where the state is saved (atomically) after changes and loaded on a fresh start */
    state_file?: string;
    /** writes answer 503 while the state file cannot be written (its last save failed, or its folder is not writable) */
    state_file_strict: boolean;
    /** seconds between an idle worker's catch-up checks (requests catch up on their own) */
    sync_interval: number;
    /** the original's dyups_trylock: a write that finds the lock held answers 409 at once */
    trylock: boolean;
    /** seconds a writer waits for the lock before giving up with 409 */
    lock_timeout: number;
    /** the original's dyups_read_msg_log: log every catch-up at info level */
    read_msg_log: boolean;
    /** how many upstreams may exist; default: as many one-server upstreams as the dict's budget holds (set by init()) */
    max_upstreams?: number;
    /** nameservers, "ip[:port]"; default: /etc/resolv.conf */
    resolver?: string[];
    /** clamp for DNS TTLs (seconds) */
    dns_min_ttl: number;
    dns_max_ttl: number;
    /** how long (seconds) the last good answer is served after resolution starts failing */
    dns_stale_ttl: number;
    /** DNS query timeout (seconds) */
    dns_timeout: number;
    /** interface tokens, one `TOKEN ROLE [NAME]` per line; read by init() in the master (dyups.http.auth) */
    admin_tokens_file?: string;
    /** interface tokens inline: { { token = "...", role = "read"|"write", name = "..." }, ... } */
    admin_tokens?: unknown[];
    /** without tokens: "loopback" (loopback clients only) or "any" (everyone, unauthenticated) */
    interface_access: string;
    /** Host names (besides loopback ones) the interface answers to in loopback mode */
    interface_hosts?: string[];
    /** CIDRs and "unix:/folder/" an upstream may point to (default: all but link-local/metadata; dyups.targets) */
    allowed_targets?: string[];
    /** failed authentications from one client within auth_fail_window seconds before it gets 429 */
    auth_fail_limit: number;
    auth_fail_window: number;
    /** active health checks: probes in flight at once (the prober's light threads) */
    check_concurrency: number;
    /** per-request traffic counters for GET /metrics and the dashboard (metrics/counters.ts) */
    metrics: boolean;
    /** the lua_shared_dict the counters are published to (declared by dyups.conf) */
    metrics_dict: string;
    /** cluster mode: etcd is the source of truth (dyups.cluster.*); validated and normalised */
    cluster?: ClusterConfig;
    /** the write history: how many accepted writes are kept (0: none) */
    history_size: number;
};

export const DEFAULTS: Options = {
    dict: "dyups",
    sync_interval: 0.1,
    trylock: false,
    lock_timeout: 5,
    read_msg_log: false,
    state_file_strict: false,
    dns_min_ttl: 1,
    dns_max_ttl: 3600,
    dns_stale_ttl: 3600,
    dns_timeout: 2,
    interface_access: "loopback",
    auth_fail_limit: 10,
    auth_fail_window: 60,
    check_concurrency: 100,
    metrics: true,
    metrics_dict: "dyups_metrics",
    history_size: 1000,
};

type Kind = "string" | "number" | "boolean" | "list" | "table";
const KINDS: LuaTable<string, Kind> = new LuaTable();
KINDS.set("dict", "string");
KINDS.set("upstream_conf", "string");
KINDS.set("state_file", "string");
KINDS.set("state_file_strict", "boolean");
KINDS.set("sync_interval", "number");
KINDS.set("trylock", "boolean");
KINDS.set("lock_timeout", "number");
KINDS.set("read_msg_log", "boolean");
KINDS.set("max_upstreams", "number");
KINDS.set("resolver", "list");
KINDS.set("dns_min_ttl", "number");
KINDS.set("dns_max_ttl", "number");
KINDS.set("dns_stale_ttl", "number");
KINDS.set("dns_timeout", "number");
KINDS.set("admin_tokens_file", "string");
KINDS.set("admin_tokens", "table");
KINDS.set("interface_access", "string");
KINDS.set("interface_hosts", "list");
KINDS.set("allowed_targets", "list");
KINDS.set("auth_fail_limit", "number");
KINDS.set("auth_fail_window", "number");
KINDS.set("check_concurrency", "number");
KINDS.set("metrics", "boolean");
KINDS.set("metrics_dict", "string");
KINDS.set("cluster", "table");
KINDS.set("history_size", "number");

/** Validates the user's table against DEFAULTS. Returns the merged options or the first problem. */
export function validateOptions(user: unknown): LuaMultiReturn<[Options, undefined] | [undefined, string]> {
    const out: Record<string, unknown> = {};
    for (const [k, v] of pairs(DEFAULTS)) out[k] = v;
    if (user === undefined) return $multi(out as Options, undefined);
    if (type(user) !== "table") return $multi(undefined, `options must be a table, got ${type(user)}`);
    for (const [k, v] of pairs(user as LuaTable<string | number, unknown>)) {
        if (type(k) !== "string") return $multi(undefined, `option names must be strings, got ${type(k)}`);
        const kind = KINDS.get(k as string);
        if (kind === undefined) return $multi(undefined, `unknown option "${k as string}"`);
        if (kind === "list") {
            if (type(v) !== "table") return $multi(undefined, `option "${k as string}" must be a list of strings`);
            for (const [, x] of ipairs(v as unknown[])) {
                if (type(x) !== "string") return $multi(undefined, `option "${k as string}" must be a list of strings`);
            }
        } else if (kind === "table") {
            if (type(v) !== "table") return $multi(undefined, `option "${k as string}" must be a table, got ${type(v)}`);
        } else if (type(v) !== kind) {
            return $multi(undefined, `option "${k as string}" must be a ${kind}, got ${type(v)}`);
        }
        out[k as string] = v;
    }
    const o = out as Options;
    if (o.dict === "") return $multi(undefined, `option "dict" must not be empty`);
    if (o.metrics_dict === "" || o.metrics_dict === o.dict) return $multi(undefined, `option "metrics_dict" must name another dict than "dict"`);
    if (!(o.sync_interval > 0 && o.sync_interval <= 60)) return $multi(undefined, `option "sync_interval" must be in (0, 60] seconds`);
    if (!(o.lock_timeout >= 0 && o.lock_timeout <= 60)) return $multi(undefined, `option "lock_timeout" must be in [0, 60] seconds`);
    if (o.max_upstreams !== undefined && (!(o.max_upstreams >= 1) || math.floor(o.max_upstreams) !== o.max_upstreams)) {
        return $multi(undefined, `option "max_upstreams" must be a positive integer`);
    }
    if (!(o.dns_min_ttl >= 0)) return $multi(undefined, `option "dns_min_ttl" must be >= 0`);
    if (!(o.dns_max_ttl >= o.dns_min_ttl)) return $multi(undefined, `option "dns_max_ttl" must be >= dns_min_ttl`);
    if (!(o.dns_stale_ttl >= 0)) return $multi(undefined, `option "dns_stale_ttl" must be >= 0`);
    if (!(o.dns_timeout > 0 && o.dns_timeout <= 30)) return $multi(undefined, `option "dns_timeout" must be in (0, 30] seconds`);
    if (o.state_file_strict && o.state_file === undefined) return $multi(undefined, `option "state_file_strict" needs "state_file"`);
    if (o.interface_access !== "loopback" && o.interface_access !== "any") return $multi(undefined, `option "interface_access" must be "loopback" or "any"`);
    if (!(o.auth_fail_limit >= 1) || math.floor(o.auth_fail_limit) !== o.auth_fail_limit) return $multi(undefined, `option "auth_fail_limit" must be a positive integer`);
    if (!(o.auth_fail_window > 0 && o.auth_fail_window <= 86400)) return $multi(undefined, `option "auth_fail_window" must be in (0, 86400] seconds`);
    if (!(o.check_concurrency >= 1 && o.check_concurrency <= 10000) || math.floor(o.check_concurrency) !== o.check_concurrency) {
        return $multi(undefined, `option "check_concurrency" must be an integer in [1, 10000]`);
    }
    if (!(o.history_size >= 0 && o.history_size <= 100000) || math.floor(o.history_size) !== o.history_size) {
        return $multi(undefined, `option "history_size" must be an integer in [0, 100000]`);
    }
    if (o.resolver !== undefined) {
        for (const [i, ns] of ipairs(o.resolver)) {
            if (string.match(ns, "^[%x%.:%[%]]+$")[0] === undefined) {
                return $multi(undefined, `option "resolver" entry ${i} ("${ns}") must be "ip[:port]"`);
            }
        }
    }
    if (o.cluster !== undefined) {
        const [c, cerr] = validateCluster(o.cluster);
        if (c === undefined) return $multi(undefined, cerr);
        if (o.upstream_conf !== undefined) return $multi(undefined, `option "upstream_conf" cannot be used with "cluster": etcd is the source of truth (POST the file's upstreams to any node once)`);
        o.cluster = c;
    }
    return $multi(o, undefined);
}

/** The options in force in this process (set by init(); workers inherit them from the master). */
let current: Options = DEFAULTS;
export function getOptions(): Options {
    return current;
}
export function setOptions(o: Options): void {
    current = o;
}
