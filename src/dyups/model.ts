/** @noSelfInFile */
// The data model shared by the parser, the store, the builder and the interface. Pure types and defaults:
// nothing here touches ngx.*. A spec is what a body says (validated); a record is what the command log
// stores (the spec plus resolved endpoints); a version is what a worker builds from a record.

/** Run-time failures are returned, never raised: `[value, undefined]` or `[undefined, reason]`. */
export type Result<T> = LuaMultiReturn<[T, undefined] | [undefined, string]>;

export type ServerKind = "ip" | "name" | "unix";

/** One `server` directive of an upstream body. */
export interface ServerSpec {
    /** The address as written (without `server`): "127.0.0.1:8080", "[::1]:80", "api.local:80", "unix:/tmp/s.sock". */
    addr: string;
    /** IP literal (IPv6 without brackets), host name, or "unix:/path". */
    host: string;
    /** 80 when omitted; 0 for unix sockets. */
    port: number;
    kind: ServerKind;
    weight: number; // default 1, 1..1000000 like nginx? nginx: weight must be >= 1
    maxFails: number; // default 1; 0 disables accounting
    failTimeout: number; // seconds, default 10
    maxConns: number; // 0 = unlimited
    backup: boolean;
    down: boolean;
    /** `resolve`: re-resolve the name by TTL (kind "name" only). */
    resolve: boolean;
    /** `service=NAME` (with resolve): SRV lookup of _NAME._tcp.host. */
    service?: string;
    /** 1-based ordinal of the server directive in its body (for error messages and /detail order). */
    index: number;
}

/** The health-check module's directives (check, check_http_send, check_http_expect_alive, check_keepalive_requests). */
export interface CheckSpec {
    type: "tcp" | "http" | "ssl_hello" | "mysql" | "ajp";
    /** milliseconds */
    interval: number;
    rise: number;
    fall: number;
    /** milliseconds */
    timeout: number;
    defaultDown: boolean;
    /** 0 = the server's own port */
    port: number;
    httpSend?: string;
    /** e.g. ["http_2xx", "http_3xx"] */
    expectAlive?: string[];
    /** check_keepalive_requests (http): requests per probe connection; undefined = 1 */
    keepaliveRequests?: number;
}

export type Method = "round_robin" | "ip_hash" | "hash" | "least_conn" | "random";

/** A validated upstream body. */
export interface UpstreamSpec {
    servers: ServerSpec[];
    method: Method;
    /** `hash KEY`: the key as written, e.g. "$request_uri" or "$arg_k$cookie_x" */
    hashKey?: string;
    hashConsistent: boolean;
    /** `random two` */
    randomTwo: boolean;
    /** `keepalive N` (0 when absent) */
    keepalive: number;
    /** seconds (default 60) */
    keepaliveTimeout: number;
    /** `keepalive_time`: seconds a kept connection may live (default 3600; nginx >= 1.21.3). Accepted; see README */
    keepaliveTime: number;
    /** default 1000 (nginx >= 1.19.10) */
    keepaliveRequests: number;
    /** `zone NAME [SIZE]`: accepted, no effect */
    zone?: string;
    check?: CheckSpec;
}

/** A resolved address of a server directive. `weight` comes from an SRV record (else the server's weight). */
export interface Endpoint {
    host: string;
    port: number;
    weight?: number;
}

/**
 * What the command log keeps per upstream: the body as received, its spec, and per server directive the
 * endpoints it resolved to (IP and unix servers: themselves; names: the DNS answer, empty while unknown).
 */
export interface UpstreamRecord {
    name: string;
    body: string;
    spec: UpstreamSpec;
    /** endpoints[i] belongs to spec.servers[i]; same length as servers */
    endpoints: Endpoint[][];
    /** the log version that produced this record */
    rev: number;
    /** the version that first created this upstream (kept across replaces: listing order) */
    created?: number;
    /** where it came from: "api", "conf", "dns", "state", "etcd" */
    source: string;
    /** the spelling of the name in the latest POST when it is not `name` (lowercase): what /list shows */
    display?: string;
    /** cluster mode: the etcd mod_revision of this state (its ETag there; rev stays this node's own version) */
    etcd?: number;
}

export const DEFAULT_PORT = 80;
export const DEFAULT_WEIGHT = 1;
export const DEFAULT_MAX_FAILS = 1;
export const DEFAULT_FAIL_TIMEOUT = 10;
