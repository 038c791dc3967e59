/** @noSelfInFile */
// Parser and validator of nginx `upstream {}` bodies: the dyups POST body, the Lua API's update(body), and the
// `upstream NAME { ... }` blocks of the upstream file. It accepts what nginx 1.22 (+ the check module, + the
// `resolve`/`service=` server parameters of nginx >= 1.27.3) accepts in an upstream block, and turns it into an
// UpstreamSpec. Pure: no ngx.*, no I/O, no DNS (names are checked for syntax only; resolution is the builder's
// job). Runs in the content phase (admin requests), in init (the upstream file), and under plain LuaJIT in specs.
// Cost: O(body length); 10 000 servers parse in a few milliseconds.
//
// Error contract: a body that does not parse or validate gives [undefined, reason]; nothing here raises for any
// string input (a non-string argument is a caller bug and raises). Reasons are lowercase, in nginx's words,
// and name the directive or the parameter and where it is:
//   invalid parameter "bogus=1" in server 2         invalid weight "0" in server 1
//   invalid port in "10.0.0.1:0" of server 3        "backup" parameter is incompatible with ip_hash in server 2
//   unknown directive "foo"                         invalid number of arguments in "ip_hash" directive
//   "keepalive" directive is duplicate               load balancing method redefined: "hash" after "ip_hash"
//   no servers are inside upstream                   unexpected end of file, expecting ";" or "}"
// parseBody appends " at line N" when the body has more than one line; parseUpstreamFile prefixes
// "FILE:LINE: " instead. The first error wins: nginx stops at the first one as well.
//
// Where this is stricter or looser than nginx (each on purpose):
//   - two balancing methods: nginx warns and keeps the last one; here it is an error;
//   - a `backup` server with ip_hash/hash/random is refused whatever the order (nginx only catches it when the
//     method comes first);
//   - fail_timeout accepts milliseconds ("500ms" = 0.5 s; nginx refuses "ms" there);
//   - integers above 2^31-1 are refused (nginx takes up to 2^63-1: any such value is a typo);
//   - host names must be syntactically valid DNS names, dotted quads must be valid IPv4 ("1..2.3" is refused);
//   - `zone` given twice is an error; `check`, `check_http_send`, `check_keepalive_requests` repeat as in the
//     check module (the last one wins); `type=fastcgi` and `port=` above 65535 are refused (the module
//     accepts them and then never checks the peer / probes port & 0xffff).

import {
    CheckSpec,
    DEFAULT_FAIL_TIMEOUT,
    DEFAULT_MAX_FAILS,
    DEFAULT_PORT,
    DEFAULT_WEIGHT,
    Method,
    Result,
    ServerKind,
    ServerSpec,
    UpstreamSpec,
} from "../model";
import { Lexer, newLexer, quote, readDirective } from "./lexer";

/** Upstream names: 1..128 bytes of [A-Za-z0-9._-]. */
export const MAX_NAME_LENGTH = 128;
/** `server` directives per upstream. */
export const MAX_SERVERS = 10000;
/** seconds (nginx's keepalive_timeout default) */
export const DEFAULT_KEEPALIVE_TIMEOUT = 60;
/** nginx >= 1.19.10 */
export const DEFAULT_KEEPALIVE_REQUESTS = 1000;
/** seconds (nginx >= 1.21.3: keepalive_time 1h) */
export const DEFAULT_KEEPALIVE_TIME = 3600;
/** The check module's defaults (milliseconds for interval and timeout). */
export const DEFAULT_CHECK_INTERVAL = 30000;
export const DEFAULT_CHECK_RISE = 2;
export const DEFAULT_CHECK_FALL = 5;
export const DEFAULT_CHECK_TIMEOUT = 1000;

/** One `upstream NAME { ... }` block of an upstream file. */
export interface UpstreamBlock {
    /** lowercased (validateName) */
    name: string;
    /** the exact text between the braces: parseBody(body) gives the same spec */
    body: string;
    spec: UpstreamSpec;
    /** line of the `upstream` keyword */
    line: number;
}

const byte = string.byte;
const sub = string.sub;
const find = string.find;
const match = string.match;
const lower = string.lower;

const MAX_INT = 2147483647;
/** sizeof(sun_path) - 1 */
const MAX_UNIX_PATH = 107;
/** nginx: a zone smaller than 8 pages is "too small" (4 KiB pages) */
const MIN_ZONE_SIZE = 8 * 4096;
/** A time above this many milliseconds (about 285 000 years) is refused rather than losing precision. */
const MAX_TIME_MS = 9007199254740991;

const C_DOT = 46;
const C_COLON = 58;
const C_LBRACKET = 91;

const CHECK_TYPES = new LuaTable<string, CheckSpec["type"]>();
CHECK_TYPES.set("tcp", "tcp");
CHECK_TYPES.set("http", "http");
CHECK_TYPES.set("ssl_hello", "ssl_hello");
CHECK_TYPES.set("mysql", "mysql");
CHECK_TYPES.set("ajp", "ajp");

const EXPECT_ALIVE = new LuaTable<string, boolean>();
EXPECT_ALIVE.set("http_2xx", true);
EXPECT_ALIVE.set("http_3xx", true);
EXPECT_ALIVE.set("http_4xx", true);
EXPECT_ALIVE.set("http_5xx", true);

// ---------------------------------------------------------------------------------------------------------
// Values: integers, times, sizes (nginx's ngx_atoi, ngx_parse_time, ngx_parse_size)

/** ngx_atoi: digits only (no sign, no spaces), here capped at 2^31-1. */
function parseUint(s: string): number | undefined {
    const len = s.length;
    if (len === 0 || len > 10 || find(s, "^%d+$")[0] === undefined) return undefined;
    const v = tonumber(s) as number;
    return v > MAX_INT ? undefined : v;
}

/**
 * ngx_parse_time, in milliseconds: units y M w d h m s ms, each at most once and in that order ("1m30s"),
 * a bare trailing number is seconds ("1m30" = 90 s). isSec: nginx's seconds context, which also allows y and M
 * (here it allows ms too); otherwise nginx's milliseconds context, where y and M are refused.
 */
function parseTime(s: string, isSec: boolean): number | undefined {
    const len = s.length;
    // steps: 0 start, 1 y, 2 M, 3 w, 4 d, 5 h, 6 m, 7 s, 8 ms
    let step = isSec ? 0 : 2;
    let value = 0;
    let total = 0;
    let valid = false;
    let i = 1;
    while (i <= len) {
        const c = byte(s, i);
        i++;
        if (c >= 48 && c <= 57) {
            value = value * 10 + (c - 48);
            if (value > MAX_TIME_MS) return undefined;
            valid = true;
            continue;
        }
        let scale: number;
        if (c === 121 /* y */) {
            if (step > 0) return undefined;
            step = 1;
            scale = 365 * 86400000;
        } else if (c === 77 /* M */) {
            if (step >= 2) return undefined;
            step = 2;
            scale = 30 * 86400000;
        } else if (c === 119 /* w */) {
            if (step >= 3) return undefined;
            step = 3;
            scale = 7 * 86400000;
        } else if (c === 100 /* d */) {
            if (step >= 4) return undefined;
            step = 4;
            scale = 86400000;
        } else if (c === 104 /* h */) {
            if (step >= 5) return undefined;
            step = 5;
            scale = 3600000;
        } else if (c === 109 /* m */) {
            if (byte(s, i) === 115 /* s */) {
                if (step >= 8) return undefined;
                i++;
                step = 8;
                scale = 1;
            } else {
                if (step >= 6) return undefined;
                step = 6;
                scale = 60000;
            }
        } else if (c === 115 /* s */) {
            if (step >= 7) return undefined;
            step = 7;
            scale = 1000;
        } else {
            return undefined;
        }
        total = total + value * scale;
        if (total > MAX_TIME_MS) return undefined;
        value = 0;
    }
    if (!valid) return undefined;
    total = total + value * 1000;
    return total > MAX_TIME_MS ? undefined : total;
}

/** ngx_parse_size: digits with an optional k/K, m/M or g/G suffix; bytes. */
function parseSize(s: string): number | undefined {
    const [digits, unit] = match(s, "^(%d+)([kKmMgG]?)$");
    if (digits === undefined || digits.length > 15) return undefined;
    let v = tonumber(digits) as number;
    if (unit === "k" || unit === "K") v = v * 1024;
    else if (unit === "m" || unit === "M") v = v * 1048576;
    else if (unit === "g" || unit === "G") v = v * 1073741824;
    return v;
}

// ---------------------------------------------------------------------------------------------------------
// Addresses (ngx_parse_url with default port 80, no URI part)

function isIPv4(s: string): boolean {
    const [a, b, c, d] = match(s, "^(%d+)%.(%d+)%.(%d+)%.(%d+)$");
    if (a === undefined) return false;
    return (
        a.length <= 3 && (tonumber(a) as number) <= 255 &&
        (b as string).length <= 3 && (tonumber(b) as number) <= 255 &&
        (c as string).length <= 3 && (tonumber(c) as number) <= 255 &&
        (d as string).length <= 3 && (tonumber(d) as number) <= 255
    );
}

/** RFC 4291 text form: up to 8 groups of 1-4 hex digits, one "::" at most, an optional dotted-quad tail. */
function isIPv6(s: string): boolean {
    const len = s.length;
    if (len < 2 || len > 45) return false;
    let groups = 0;
    let compressed = false;
    let i = 1;
    if (byte(s, 1) === C_COLON) {
        if (byte(s, 2) !== C_COLON) return false;
        compressed = true;
        i = 3;
    }
    while (i <= len) {
        const e = find(s, "^[0-9a-fA-F]+", i)[1];
        if (e === undefined) return false;
        if (byte(s, e + 1) === C_DOT) {
            if (!isIPv4(sub(s, i))) return false;
            groups += 2;
            break;
        }
        if (e - i + 1 > 4) return false;
        groups++;
        i = e + 1;
        if (i > len) break;
        if (byte(s, i) !== C_COLON) return false;
        if (byte(s, i + 1) === C_COLON) {
            if (compressed) return false;
            compressed = true;
            i += 2;
        } else {
            i++;
            if (i > len) return false; // a trailing single ":"
        }
    }
    return compressed ? groups <= 7 : groups === 8;
}

/** DNS syntax: labels of 1-63 bytes of [A-Za-z0-9_-], at most 253 bytes, an optional trailing dot. */
function isHostName(s: string): boolean {
    const len = s.length;
    if (len > 254 || find(s, "^[A-Za-z0-9_%-%.]+$")[0] === undefined) return false;
    let i = 1;
    while (true) {
        const dot = find(s, ".", i, true)[0];
        const size = (dot === undefined ? len + 1 : dot) - i;
        if (size < 1 || size > 63) return false;
        if (dot === undefined || dot === len) return dot !== undefined || len <= 253;
        i = dot + 1;
    }
}

function parsePort(s: string): number | undefined {
    const v = parseUint(s);
    return v === undefined || v < 1 || v > 65535 ? undefined : v;
}

// parseAddress's outputs besides the kind (the parser never yields, so module scratch is safe).
let addrHost = "";
let addrPort = 0;
let addrHasPort = false;

/** Sets addrHost/addrPort/addrHasPort; errors are ngx_parse_url's (`invalid port`, `no host`, ...). */
function parseAddress(addr: string): Result<ServerKind> {
    if (lower(sub(addr, 1, 5)) === "unix:") {
        const path = sub(addr, 6);
        if (path.length === 0) return $multi(undefined, "no path in the unix domain socket");
        if (path.length > MAX_UNIX_PATH) return $multi(undefined, "too long path in the unix domain socket");
        addrHost = "unix:" + path;
        addrPort = 0;
        addrHasPort = false;
        return $multi("unix", undefined);
    }

    if (byte(addr, 1) === C_LBRACKET) {
        const close = find(addr, "]", 2, true)[0];
        if (close === undefined) return $multi(undefined, "invalid host");
        if (close === addr.length) {
            addrPort = DEFAULT_PORT;
            addrHasPort = false;
        } else if (byte(addr, close + 1) === C_COLON) {
            const port = parsePort(sub(addr, close + 2));
            if (port === undefined) return $multi(undefined, "invalid port");
            addrPort = port;
            addrHasPort = true;
        } else {
            return $multi(undefined, "invalid host");
        }
        const ip = sub(addr, 2, close - 1);
        if (ip.length === 0) return $multi(undefined, "no host");
        if (!isIPv6(ip)) return $multi(undefined, "invalid IPv6 address");
        addrHost = lower(ip);
        return $multi("ip", undefined);
    }

    if (find(addr, "[/?]")[0] !== undefined) return $multi(undefined, "invalid host");
    let host = addr;
    const colon = find(addr, ":", 1, true)[0];
    if (colon !== undefined) {
        const port = parsePort(sub(addr, colon + 1));
        if (port === undefined) return $multi(undefined, "invalid port");
        host = sub(addr, 1, colon - 1);
        addrPort = port;
        addrHasPort = true;
    } else {
        addrPort = DEFAULT_PORT;
        addrHasPort = false;
    }
    if (host.length === 0) return $multi(undefined, "no host");
    if (find(host, "^[0-9.]+$")[0] !== undefined) {
        if (!isIPv4(host)) return $multi(undefined, "invalid host");
        addrHost = host;
        return $multi("ip", undefined);
    }
    if (!isHostName(host)) return $multi(undefined, "invalid host");
    addrHost = lower(host);
    return $multi("name", undefined);
}

// ---------------------------------------------------------------------------------------------------------
// Directives

/** What the directives of one body have set so far. */
interface State {
    servers: ServerSpec[];
    nservers: number;
    nprimary: number;
    method: Method;
    /** the directive that set the method ("" while round robin by default) */
    methodDirective: string;
    hashKey: string | undefined;
    hashConsistent: boolean;
    randomTwo: boolean;
    keepalive: number;
    keepaliveTimeout: number;
    keepaliveTime: number;
    keepaliveRequests: number;
    zone: string | undefined;
    check: CheckSpec | undefined;
    httpSend: string | undefined;
    expectAlive: string[] | undefined;
    checkKeepaliveRequests: number | undefined;
    /** directives that may appear once, by name */
    seen: LuaTable<string, boolean>;
    /** index and line of the first backup server (0: none) */
    firstBackup: number;
    firstBackupLine: number;
    /** the line the current error refers to (a handler sets it for a parameter; else the directive's line) */
    errLine: number;
}

/** Applies one directive; returns an error reason (and may set st.errLine), or undefined. */
type Handler = (st: State, n: number, args: string[], lines: number[]) => string | undefined;

function argsError(name: string): string {
    return 'invalid number of arguments in "' + name + '" directive';
}

function duplicate(st: State, name: string): string | undefined {
    if (st.seen.get(name) === true) return '"' + name + '" directive is duplicate';
    st.seen.set(name, true);
    return undefined;
}

function invalidValue(what: string, value: string, name: string): string {
    return "invalid " + what + " " + quote(value) + ' in "' + name + '" directive';
}

function inServer(index: number): string {
    return " in server " + index;
}

function supportsBackup(method: Method): boolean {
    return method === "round_robin" || method === "least_conn";
}

function serverDirective(st: State, n: number, args: string[], lines: number[]): string | undefined {
    if (n < 2) return argsError("server");
    if (st.nservers >= MAX_SERVERS) return "too many servers in upstream (max " + MAX_SERVERS + ")";
    const index = st.nservers + 1;

    const addr = args[1];
    const [kind, aerr] = parseAddress(addr);
    if (kind === undefined) {
        st.errLine = lines[1];
        return aerr + " in " + quote(addr) + " of server " + index;
    }
    const host = addrHost;
    const port = addrPort;
    const hasPort = addrHasPort;

    let weight = DEFAULT_WEIGHT;
    let maxFails = DEFAULT_MAX_FAILS;
    let failTimeout = DEFAULT_FAIL_TIMEOUT;
    let maxConns = 0;
    let backup = false;
    let down = false;
    let resolve = false;
    let service: string | undefined = undefined;
    let backupLine = 0;

    for (let i = 2; i < n; i++) {
        const p = args[i];
        st.errLine = lines[i];
        const eq = find(p, "=", 1, true)[0];
        if (eq !== undefined) {
            const key = sub(p, 1, eq - 1);
            const v = sub(p, eq + 1);
            if (key === "weight") {
                const w = parseUint(v);
                if (w === undefined || w === 0) return "invalid weight " + quote(v) + inServer(index);
                weight = w;
            } else if (key === "max_fails") {
                const m = parseUint(v);
                if (m === undefined) return "invalid max_fails " + quote(v) + inServer(index);
                maxFails = m;
            } else if (key === "fail_timeout") {
                const ms = parseTime(v, true);
                if (ms === undefined) return "invalid fail_timeout " + quote(v) + inServer(index);
                failTimeout = ms / 1000;
            } else if (key === "max_conns") {
                const m = parseUint(v);
                if (m === undefined) return "invalid max_conns " + quote(v) + inServer(index);
                maxConns = m;
            } else if (key === "service") {
                if (find(v, "^[A-Za-z0-9_%-%.]+$")[0] === undefined) return "invalid service " + quote(v) + inServer(index);
                service = v;
            } else {
                return "invalid parameter " + quote(p) + inServer(index);
            }
        } else if (p === "backup") {
            backup = true;
            backupLine = lines[i];
        } else if (p === "down") {
            down = true;
        } else if (p === "resolve") {
            resolve = true;
        } else {
            return "invalid parameter " + quote(p) + inServer(index);
        }
    }

    if (backup && !supportsBackup(st.method)) {
        st.errLine = backupLine;
        return '"backup" parameter is incompatible with ' + st.methodDirective + inServer(index);
    }
    if (service !== undefined) {
        st.errLine = lines[0];
        if (!resolve) return '"service" parameter requires "resolve"' + inServer(index);
        if (kind !== "name") return '"service" parameter requires a host name' + inServer(index);
        if (hasPort) return '"service" parameter requires an address without a port' + inServer(index);
    }

    st.servers[st.nservers] = {
        addr: addr,
        host: host,
        port: port,
        kind: kind,
        weight: weight,
        maxFails: maxFails,
        failTimeout: failTimeout,
        maxConns: maxConns,
        backup: backup,
        down: down,
        // names only: an IP or a socket path has nothing to re-resolve (accepted there, like nginx does)
        resolve: resolve && kind === "name",
        service: service,
        index: index,
    };
    st.nservers = index;
    if (backup) {
        if (st.firstBackup === 0) {
            st.firstBackup = index;
            st.firstBackupLine = backupLine;
        }
    } else {
        st.nprimary++;
    }
    return undefined;
}

function setMethod(st: State, method: Method, name: string): string | undefined {
    if (st.methodDirective !== "") {
        return 'load balancing method redefined: "' + name + '" after "' + st.methodDirective + '"';
    }
    if (st.firstBackup !== 0 && !supportsBackup(method)) {
        st.errLine = st.firstBackupLine;
        return '"backup" parameter is incompatible with ' + name + " in server " + st.firstBackup;
    }
    st.method = method;
    st.methodDirective = name;
    return undefined;
}

function ipHashDirective(st: State, n: number): string | undefined {
    if (n !== 1) return argsError("ip_hash");
    return setMethod(st, "ip_hash", "ip_hash");
}

function leastConnDirective(st: State, n: number): string | undefined {
    if (n !== 1) return argsError("least_conn");
    return setMethod(st, "least_conn", "least_conn");
}

/** ngx_http_script_compile's checks of the `$name` / `${name}` references in a complex value. */
function checkVariables(key: string): string | undefined {
    let i = 1;
    while (true) {
        const d = find(key, "$", i, true)[0];
        if (d === undefined) return undefined;
        if (byte(key, d + 1) === 123 /* { */) {
            const e = find(key, "^[A-Za-z0-9_]*}", d + 2)[1];
            if (e === undefined) {
                if (find(key, "^[A-Za-z0-9_]+", d + 2)[0] !== undefined) {
                    return "the closing bracket in " + quote(sub(key, d + 2)) + " variable is missing";
                }
                return "invalid variable name in " + quote(key);
            }
            if (e === d + 2) return "invalid variable name in " + quote(key);
            i = e + 1;
        } else {
            const e = find(key, "^[A-Za-z0-9_]+", d + 1)[1];
            if (e === undefined) return "invalid variable name in " + quote(key);
            i = e + 1;
        }
    }
}

function hashDirective(st: State, n: number, args: string[], lines: number[]): string | undefined {
    if (n < 2 || n > 3) return argsError("hash");
    const key = args[1];
    const verr = checkVariables(key);
    if (verr !== undefined) {
        st.errLine = lines[1];
        return verr + ' in "hash" directive';
    }
    if (n === 3 && args[2] !== "consistent") {
        st.errLine = lines[2];
        return "invalid parameter " + quote(args[2]) + ' in "hash" directive';
    }
    const err = setMethod(st, "hash", "hash");
    if (err !== undefined) return err;
    st.hashKey = key;
    st.hashConsistent = n === 3;
    return undefined;
}

function randomDirective(st: State, n: number, args: string[], lines: number[]): string | undefined {
    if (n > 3) return argsError("random");
    if (n >= 2 && args[1] !== "two") {
        st.errLine = lines[1];
        return "invalid parameter " + quote(args[1]) + ' in "random" directive';
    }
    // `random two` picks the less loaded of two: least_conn is its only (and default) method
    if (n === 3 && args[2] !== "least_conn") {
        st.errLine = lines[2];
        return "invalid parameter " + quote(args[2]) + ' in "random" directive';
    }
    const err = setMethod(st, "random", "random");
    if (err !== undefined) return err;
    st.randomTwo = n >= 2;
    return undefined;
}

function keepaliveDirective(st: State, n: number, args: string[]): string | undefined {
    if (n !== 2) return argsError("keepalive");
    const dup = duplicate(st, "keepalive");
    if (dup !== undefined) return dup;
    const v = parseUint(args[1]);
    if (v === undefined || v === 0) return invalidValue("value", args[1], "keepalive");
    st.keepalive = v;
    return undefined;
}

function keepaliveTimeoutDirective(st: State, n: number, args: string[]): string | undefined {
    if (n !== 2) return argsError("keepalive_timeout");
    const dup = duplicate(st, "keepalive_timeout");
    if (dup !== undefined) return dup;
    const ms = parseTime(args[1], false);
    if (ms === undefined) return invalidValue("value", args[1], "keepalive_timeout");
    st.keepaliveTimeout = ms / 1000;
    return undefined;
}

function keepaliveTimeDirective(st: State, n: number, args: string[]): string | undefined {
    if (n !== 2) return argsError("keepalive_time");
    const dup = duplicate(st, "keepalive_time");
    if (dup !== undefined) return dup;
    const ms = parseTime(args[1], false);
    if (ms === undefined) return invalidValue("value", args[1], "keepalive_time");
    st.keepaliveTime = ms / 1000;
    return undefined;
}

function keepaliveRequestsDirective(st: State, n: number, args: string[]): string | undefined {
    if (n !== 2) return argsError("keepalive_requests");
    const dup = duplicate(st, "keepalive_requests");
    if (dup !== undefined) return dup;
    const v = parseUint(args[1]);
    if (v === undefined) return invalidValue("value", args[1], "keepalive_requests");
    st.keepaliveRequests = v;
    return undefined;
}

function zoneDirective(st: State, n: number, args: string[], lines: number[]): string | undefined {
    if (n < 2 || n > 3) return argsError("zone");
    const dup = duplicate(st, "zone");
    if (dup !== undefined) return dup;
    const name = args[1];
    if (name.length === 0) return invalidValue("zone name", name, "zone");
    if (n === 3) {
        st.errLine = lines[2];
        const size = parseSize(args[2]);
        if (size === undefined) return invalidValue("zone size", args[2], "zone");
        if (size < MIN_ZONE_SIZE) return "zone " + quote(name) + " is too small";
    }
    st.zone = name;
    return undefined;
}

/**
 * `check`: the check module's grammar. Each parameter is matched by name; a parameter may repeat and the
 * last one wins; a second `check` line starts from the defaults again but keeps an earlier `type=` when it
 * has none (all as the module). `type=fastcgi` is refused: the module never sends its request for a
 * dynamic upstream (the peer is always down, reference §6.3). `port=` is 1..65535 (the module truncates it
 * to 16 bits). `unique=` is accepted and has no effect, as in a dyups body.
 */
function checkDirective(st: State, n: number, args: string[], lines: number[]): string | undefined {
    if (n < 2) return argsError("check");
    let interval = DEFAULT_CHECK_INTERVAL;
    let rise = DEFAULT_CHECK_RISE;
    let fall = DEFAULT_CHECK_FALL;
    let timeout = DEFAULT_CHECK_TIMEOUT;
    let defaultDown = true;
    let checkType: CheckSpec["type"] = st.check !== undefined ? st.check.type : "tcp";
    let port = 0;
    for (let i = 1; i < n; i++) {
        const p = args[i];
        st.errLine = lines[i];
        const eq = find(p, "=", 1, true)[0];
        if (eq === undefined) return invalidValue("parameter", p, "check");
        const key = sub(p, 1, eq - 1);
        const v = sub(p, eq + 1);
        if (key === "interval" || key === "timeout" || key === "rise" || key === "fall") {
            // the check module reads these with ngx_atoi: bare numbers (milliseconds for interval and timeout)
            const num = parseUint(v);
            if (num === undefined || num === 0) return invalidValue(key, v, "check");
            if (key === "interval") interval = num;
            else if (key === "timeout") timeout = num;
            else if (key === "rise") rise = num;
            else fall = num;
        } else if (key === "default_down" || key === "unique") {
            const b = lower(v);
            if (b !== "true" && b !== "false") return invalidValue(key, v, "check") + ', it must be "true" or "false"';
            if (key === "default_down") defaultDown = b === "true";
        } else if (key === "type") {
            if (v === "fastcgi") {
                return invalidValue("type", v, "check") + ": fastcgi checks are not supported (the check module sends nothing for them in a dyups body)";
            }
            const t = CHECK_TYPES.get(v);
            if (t === undefined) return invalidValue("type", v, "check");
            checkType = t;
        } else if (key === "port") {
            const num = parseUint(v);
            if (num === undefined || num === 0 || num > 65535) return invalidValue("port", v, "check");
            port = num;
        } else {
            return invalidValue("parameter", p, "check");
        }
    }
    st.check = {
        type: checkType,
        interval: interval,
        rise: rise,
        fall: fall,
        timeout: timeout,
        defaultDown: defaultDown,
        port: port,
    };
    return undefined;
}

/** `check_http_send "..."`: after `check`; a non-empty request needs type=http (the module's rules). The last one wins. */
function checkHttpSendDirective(st: State, n: number, args: string[]): string | undefined {
    if (n !== 2) return argsError("check_http_send");
    const check = st.check;
    if (check === undefined) return "invalid check_http_send should set [check] first";
    if (args[1] !== "" && check.type !== "http") return 'invalid check_http_send for type "' + check.type + '"';
    st.httpSend = args[1];
    return undefined;
}

/** `check_keepalive_requests N`: requests per probe connection (http), N >= 1. The last one wins. */
function checkKeepaliveRequestsDirective(st: State, n: number, args: string[]): string | undefined {
    if (n !== 2) return argsError("check_keepalive_requests");
    const v = parseUint(args[1]);
    if (v === undefined || v === 0) return '"check_keepalive_requests" directive invalid value';
    st.checkKeepaliveRequests = v;
    return undefined;
}

/** `check_fastcgi_param NAME VALUE`: accepted for any type (as the module), without effect (no fastcgi checks). */
function checkFastcgiParamDirective(_st: State, n: number): string | undefined {
    if (n !== 3) return argsError("check_fastcgi_param");
    return undefined;
}

/** http-level directives of the check module: refused inside an upstream, in nginx's words. */
function notAllowedHere(_st: State, _n: number, args: string[]): string | undefined {
    return '"' + args[0] + '" directive is not allowed here';
}

/** Values add up across directives, like the module's bitmask; duplicates are dropped, order is kept. */
function checkHttpExpectAliveDirective(st: State, n: number, args: string[], lines: number[]): string | undefined {
    if (n < 2) return argsError("check_http_expect_alive");
    let list = st.expectAlive;
    if (list === undefined) {
        list = [];
        st.expectAlive = list;
    }
    for (let i = 1; i < n; i++) {
        const v = lower(args[i]);
        if (EXPECT_ALIVE.get(v) !== true) {
            st.errLine = lines[i];
            return invalidValue("value", args[i], "check_http_expect_alive");
        }
        let found = false;
        for (const have of list) {
            if (have === v) found = true;
        }
        if (!found) list[list.length] = v;
    }
    return undefined;
}

const HANDLERS = new LuaTable<string, Handler>();
HANDLERS.set("server", serverDirective);
HANDLERS.set("ip_hash", ipHashDirective);
HANDLERS.set("least_conn", leastConnDirective);
HANDLERS.set("hash", hashDirective);
HANDLERS.set("random", randomDirective);
HANDLERS.set("keepalive", keepaliveDirective);
HANDLERS.set("keepalive_timeout", keepaliveTimeoutDirective);
HANDLERS.set("keepalive_requests", keepaliveRequestsDirective);
HANDLERS.set("keepalive_time", keepaliveTimeDirective);
HANDLERS.set("zone", zoneDirective);
HANDLERS.set("check", checkDirective);
HANDLERS.set("check_http_send", checkHttpSendDirective);
HANDLERS.set("check_http_expect_alive", checkHttpExpectAliveDirective);
HANDLERS.set("check_keepalive_requests", checkKeepaliveRequestsDirective);
HANDLERS.set("check_fastcgi_param", checkFastcgiParamDirective);
HANDLERS.set("check_shm_size", notAllowedHere);
HANDLERS.set("check_status", notAllowedHere);

/** [spec, undefined, offset of the closing "}" (block) or 0] or [undefined, reason, line (0: none)] */
type Parsed = LuaMultiReturn<[UpstreamSpec, undefined, number] | [undefined, string, number]>;

/**
 * Parses directives from lx until the end of the text (inBlock false: a `}` is an error) or until the `}`
 * that closes the block (inBlock true: the end of the text is an error). blockLine: the line that
 * whole-body errors ("no servers ...") refer to, 0 for none.
 */
function parseDirectives(lx: Lexer, inBlock: boolean, blockLine: number): Parsed {
    const st: State = {
        servers: [],
        nservers: 0,
        nprimary: 0,
        method: "round_robin",
        methodDirective: "",
        hashKey: undefined,
        hashConsistent: false,
        randomTwo: false,
        keepalive: 0,
        keepaliveTimeout: DEFAULT_KEEPALIVE_TIMEOUT,
        keepaliveTime: DEFAULT_KEEPALIVE_TIME,
        keepaliveRequests: DEFAULT_KEEPALIVE_REQUESTS,
        zone: undefined,
        check: undefined,
        httpSend: undefined,
        expectAlive: undefined,
        checkKeepaliveRequests: undefined,
        seen: new LuaTable<string, boolean>(),
        firstBackup: 0,
        firstBackupLine: 0,
        errLine: 0,
    };
    const args = lx.args;
    const lines = lx.argLines;
    let closePos = 0;

    while (true) {
        const [term, lerr] = readDirective(lx);
        if (term === undefined) return $multi(undefined, lerr as string, lx.errLine);
        if (term === "eof") {
            if (inBlock) return $multi(undefined, 'unexpected end of file, expecting "}"', lx.tokLine);
            break;
        }
        if (term === "}") {
            if (!inBlock) return $multi(undefined, 'unexpected "}"', lx.tokLine);
            closePos = lx.tokStart;
            break;
        }
        const name = args[0];
        const line = lx.dirLine;
        const handler = HANDLERS.get(name);
        if (handler === undefined) {
            if (name === "upstream") return $multi(undefined, '"upstream" directive is not allowed here', line);
            return $multi(undefined, "unknown directive " + quote(name), line);
        }
        if (term === "{") {
            return $multi(undefined, "directive " + quote(name) + ' is not terminated by ";"', line);
        }
        st.errLine = line;
        const err = handler(st, lx.nargs, args, lines);
        if (err !== undefined) return $multi(undefined, err, st.errLine);
    }

    if (st.nservers === 0) return $multi(undefined, "no servers are inside upstream", blockLine);
    if (st.nprimary === 0) return $multi(undefined, "no servers are inside upstream except backup ones", blockLine);

    const check = st.check;
    if (check !== undefined) {
        check.httpSend = st.httpSend;
        check.expectAlive = st.expectAlive;
        if (st.checkKeepaliveRequests !== undefined) check.keepaliveRequests = st.checkKeepaliveRequests;
    }
    // check_http_expect_alive / check_keepalive_requests without `check`: accepted like the module does, no effect

    const spec: UpstreamSpec = {
        servers: st.servers,
        method: st.method,
        hashKey: st.hashKey,
        hashConsistent: st.hashConsistent,
        randomTwo: st.randomTwo,
        keepalive: st.keepalive,
        keepaliveTimeout: st.keepaliveTimeout,
        keepaliveTime: st.keepaliveTime,
        keepaliveRequests: st.keepaliveRequests,
        zone: st.zone,
        check: check,
    };
    return $multi(spec, undefined, closePos);
}

// ---------------------------------------------------------------------------------------------------------
// Public API

/**
 * Parses and validates the contents of an `upstream {}` block. Returns [spec, undefined] or
 * [undefined, reason]; never raises for a string (raises for a non-string: a caller bug). A reason gets
 * " at line N" when the body has several lines.
 */
export function parseBody(body: string): Result<UpstreamSpec> {
    if (typeof body !== "string") {
        error("bad argument #1 to 'parseBody' (string expected, got " + type(body) + ")", 2);
    }
    const [spec, err, line] = parseDirectives(newLexer(body), false, 0);
    if (spec === undefined) {
        if (line > 0 && find(body, "\n", 1, true)[0] !== undefined) {
            return $multi(undefined, err + " at line " + line);
        }
        return $multi(undefined, err as string);
    }
    return $multi(spec, undefined);
}

/**
 * Checks an upstream name and returns it lowercased (names are case-insensitive). Port-less, 1..128 bytes of
 * [A-Za-z0-9._-]. Returns [name, undefined] or [undefined, reason]; raises for a non-string.
 */
export function validateName(name: string): Result<string> {
    if (typeof name !== "string") {
        error("bad argument #1 to 'validateName' (string expected, got " + type(name) + ")", 2);
    }
    const len = name.length;
    if (len === 0) return $multi(undefined, "upstream name is empty");
    if (len > MAX_NAME_LENGTH) {
        return $multi(undefined, "upstream name is too long (" + len + " bytes, max " + MAX_NAME_LENGTH + ")");
    }
    if (find(name, "[^A-Za-z0-9_%-%.]")[0] !== undefined) {
        return $multi(
            undefined,
            "invalid upstream name " + quote(name) + ': only letters, digits, ".", "_" and "-" are allowed',
        );
    }
    return $multi(lower(name), undefined);
}

/**
 * Parses a file of `upstream NAME { ... }` blocks (comments and blanks between them). Returns the blocks in
 * file order, or [undefined, "FILE:LINE: reason"] for the first error: anything but an upstream block,
 * an invalid name, a duplicate name (case-insensitive), or any body error. Raises for non-string arguments.
 */
export function parseUpstreamFile(text: string, filename: string): Result<UpstreamBlock[]> {
    if (typeof text !== "string") {
        error("bad argument #1 to 'parseUpstreamFile' (string expected, got " + type(text) + ")", 2);
    }
    if (typeof filename !== "string") {
        error("bad argument #2 to 'parseUpstreamFile' (string expected, got " + type(filename) + ")", 2);
    }
    const lx = newLexer(text);
    const args = lx.args;
    const blocks: UpstreamBlock[] = [];
    const seen = new LuaTable<string, number>();
    let count = 0;

    while (true) {
        const [term, lerr] = readDirective(lx);
        if (term === undefined) return $multi(undefined, filename + ":" + lx.errLine + ": " + lerr);
        if (term === "eof") break;
        if (term === "}") return $multi(undefined, filename + ":" + lx.tokLine + ': unexpected "}"');
        const line = lx.dirLine;
        const at = filename + ":" + line + ": ";
        if (args[0] !== "upstream") return $multi(undefined, at + "unknown directive " + quote(args[0]));
        if (term !== "{") return $multi(undefined, at + 'directive "upstream" has no opening "{"');
        if (lx.nargs !== 2) return $multi(undefined, at + argsError("upstream"));
        const [name, nerr] = validateName(args[1]);
        if (name === undefined) return $multi(undefined, at + nerr);
        const first = seen.get(name);
        if (first !== undefined) {
            return $multi(undefined, at + "duplicate upstream " + quote(name) + " (first defined at line " + first + ")");
        }
        seen.set(name, line);

        const bodyStart = lx.tokEnd + 1; // just after "{"
        const [spec, err, x] = parseDirectives(lx, true, line);
        if (spec === undefined) return $multi(undefined, filename + ":" + (x > 0 ? x : line) + ": " + err);
        blocks[count] = { name: name, body: sub(text, bodyStart, x - 1), spec: spec, line: line };
        count++;
    }
    return $multi(blocks, undefined);
}
