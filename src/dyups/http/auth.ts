/** @noSelfInFile */
// Who may use the HTTP interface: the access gate every request passes before routing (content phase).
//
// Modes (the options admin_tokens, admin_tokens_file, interface_access, interface_hosts):
//   tokens     any token configured: every request needs `Authorization: Bearer TOKEN`, from any address
//              (or HTTP Basic credentials whose password is the token: a browser on the dashboard page).
//              Missing: 401; unknown or malformed: 401 (counted); both with WWW-Authenticate. A `read` token
//              may GET (and HEAD); every other method needs a `write` token (403 otherwise).
//              interface_access and interface_hosts do not apply: the token is the access rule.
//   loopback   no token, interface_access = "loopback" (the default): only loopback clients (127.0.0.0/8,
//              ::1, unix sockets) are served (others 403, naming the options), and only when their Host
//              is a loopback name or address, `localhost`, `*.localhost`, or listed in interface_hosts (a
//              browser tricked by DNS rebinding sends the attacker's name: 403).
//   any        no token, interface_access = "any": everyone is served, as by the original module; protect
//              the location with nginx's allow/deny or auth_basic.
// In every mode a write (any method but GET/HEAD) that carries an Origin other than the interface's own
// (scheme://Host of the request), or no Origin but `Sec-Fetch-Site: cross-site|same-site`, is refused with
// 403: a page in the operator's browser cannot post to the interface. curl and scripts send no Origin.
//
// Tokens: init() (the master, before workers drop privileges) reads admin_tokens_file and admin_tokens
// and keeps only HMAC-SHA1 digests of the tokens under a random per-start key; a presented token is
// digested the same way and compared with every digest in constant time (no early exit, no length
// leak). Tokens are never logged, never put in a response, never in an error message.
// Rate limit: failed authentications (a token presented and wrong) count per client address (an IPv6 /64
// as one) in shm (dyups.store.auth); at auth_fail_limit within auth_fail_window seconds the client's
// requests are refused with 429 and Retry-After until the window ends, and one warning with the client
// address is logged per window. A missing token is not counted (browsers and forgotten headers).
// Cost: tokens mode, one shm get + one HMAC per request; loopback mode, a few string operations.
import { Result } from "../errors";
import { WriteSource } from "../audit";
import { Options, getOptions } from "../options";
import { addrBytes, parseIp } from "../balance/ip_addr";
import { addFailure, failures, windowLeft } from "../store/auth";

export type Role = "read" | "write";

/** A token as configured (only while configuring: afterwards only its digest is kept). */
export interface TokenSpec {
    token: string;
    role: Role;
    name: string;
}

interface TokenEntry {
    digest: string;
    role: Role;
    name: string;
}

/** What the gate needs to know about a request (the interface reads it from ngx.var). */
export interface RequestInfo {
    method: string;
    /** $remote_addr (after nginx's realip module, when configured) */
    client: string;
    authorization?: string;
    /** the Host header as sent ($http_host) */
    host?: string;
    origin?: string;
    /** Sec-Fetch-Site */
    fetchSite?: string;
}

/** Why a request is refused: the status, the body (the reason) and the headers that go with it. */
export interface Refusal {
    status: number;
    body: string;
    authenticate?: string;
    retryAfter?: number;
}

const find = string.find;
const match = string.match;
const lower = string.lower;
const sub = string.sub;
const byte = string.byte;

const NAME_PATTERN = "^[%w._-]+$";
const MAX_TOKEN = 4096;
/** Tokens shorter than this are accepted with a warning at start. */
const SHORT_TOKEN = 16;
const REALM = 'Bearer realm="dyups"';

let entries: TokenEntry[] = [];
let tokenCount = 0;
let hmacKey = "";
/** interface_hosts, lowercased */
let extraHosts: LuaTable<string, boolean> = new LuaTable();

function checkRole(role: unknown): role is Role {
    return role === "read" || role === "write";
}

/** A token's text is acceptable: 1..4096 bytes, no whitespace, no control characters. */
function tokenShapeOk(token: string): boolean {
    return token.length > 0 && token.length <= MAX_TOKEN && find(token, "[%s%c]")[0] === undefined;
}

/**
 * Parses an admin_tokens_file: one `TOKEN ROLE [NAME]` per line, `#` comments (at the start of a line or
 * after whitespace), blank lines. A missing NAME is "line-N". Errors name the file and line, never a token.
 */
export function parseTokenFile(text: string, path: string): Result<TokenSpec[]> {
    const out: TokenSpec[] = [];
    let lineNo = 0;
    for (const [raw] of string.gmatch(text + "\n", "([^\n]*)\n")) {
        lineNo = lineNo + 1;
        let line = raw;
        const [hash] = find(line, "^#");
        if (hash !== undefined) line = "";
        const [c] = find(line, "%s#");
        if (c !== undefined) line = sub(line, 1, c);
        const fields: string[] = [];
        for (const [f] of string.gmatch(line, "%S+")) fields[fields.length] = f;
        if (fields.length > 0) {
            if (fields.length < 2 || fields.length > 3) {
                return $multi(undefined, `${path}:${lineNo}: expected "TOKEN ROLE [NAME]"`);
            }
            const [token, role, name] = [fields[0], fields[1], fields[2] ?? `line-${lineNo}`];
            if (!tokenShapeOk(token)) return $multi(undefined, `${path}:${lineNo}: the token must be 1..${MAX_TOKEN} printable characters`);
            if (!checkRole(role)) return $multi(undefined, `${path}:${lineNo}: the role (second field) must be "read" or "write"`);
            if (match(name, NAME_PATTERN)[0] === undefined || name.length > 64) {
                return $multi(undefined, `${path}:${lineNo}: the name (third field) must be 1..64 of A-Za-z0-9._-`);
            }
            out[out.length] = { token, role, name };
        }
    }
    return $multi(out, undefined);
}

/** Validates the admin_tokens option: a list of { token = "...", role = "read"|"write", name = "..." }. */
export function parseTokenList(list: unknown): Result<TokenSpec[]> {
    const out: TokenSpec[] = [];
    if (type(list) !== "table") return $multi(undefined, `option "admin_tokens" must be a list of { token = ..., role = ..., name = ... }`);
    for (const [k] of pairs(list as LuaTable<AnyNotNil, unknown>)) {
        if (type(k) !== "number") return $multi(undefined, `option "admin_tokens" must be a list of { token = ..., role = ..., name = ... }`);
    }
    for (const [i, e] of ipairs(list as unknown[])) {
        const where = `option "admin_tokens" entry ${i}`;
        if (type(e) !== "table") return $multi(undefined, `${where} must be a table { token = ..., role = ..., name = ... }`);
        const t = e as LuaTable<string, unknown>;
        for (const [k] of pairs(t)) {
            if (k !== "token" && k !== "role" && k !== "name") return $multi(undefined, `${where}: unknown field "${tostring(k)}"`);
        }
        const token = t.get("token");
        const role = t.get("role");
        const name = t.get("name") ?? `token-${i}`;
        if (type(token) !== "string" || !tokenShapeOk(token as string)) {
            return $multi(undefined, `${where}: "token" must be a string of 1..${MAX_TOKEN} printable characters`);
        }
        if (!checkRole(role)) return $multi(undefined, `${where}: "role" must be "read" or "write"`);
        if (type(name) !== "string" || match(name as string, NAME_PATTERN)[0] === undefined || (name as string).length > 64) {
            return $multi(undefined, `${where}: "name" must be 1..64 of A-Za-z0-9._-`);
        }
        out[out.length] = { token: token as string, role, name: name as string };
    }
    return $multi(out, undefined);
}

function randomKey(): string {
    const [f] = io.open("/dev/urandom", "rb");
    if (f !== undefined) {
        const k = f.read(32) as string | undefined;
        f.close();
        if (k !== undefined && k.length === 32) return k;
    }
    return `${ngx.now()}:${math.random()}:${tostring({})}`;
}

function digest(token: string): string {
    return ngx.hmac_sha1(hmacKey, token);
}

/** Equal digests, in time independent of where they differ. */
function sameDigest(a: string, b: string): boolean {
    if (a.length !== b.length) return false; // digests all have one length: never taken for a real digest
    let diff = 0;
    for (let i = 1; i <= a.length; i++) diff = diff | (byte(a, i) ^ byte(b, i));
    return diff === 0;
}

/**
 * Sets the gate from the options: reads admin_tokens_file (init(), in the master: it may be readable by
 * root only) and admin_tokens, keeps their digests, and interface_hosts. Returns the number of tokens, or
 * the first problem (nginx then refuses to start with it).
 */
export function configureAuth(o: Options): Result<number> {
    const specs: TokenSpec[] = [];
    if (o.admin_tokens !== undefined) {
        const [list, err] = parseTokenList(o.admin_tokens);
        if (list === undefined) return $multi(undefined, err);
        if (list.length === 0) return $multi(undefined, `option "admin_tokens" is an empty list`);
        for (const [, s] of ipairs(list)) specs[specs.length] = s;
    }
    if (o.admin_tokens_file !== undefined) {
        const path = o.admin_tokens_file;
        const [f, oerr] = io.open(path, "rb");
        if (f === undefined) return $multi(undefined, `cannot read admin_tokens_file: ${oerr}`);
        const text = (f.read("*a") as string | undefined) ?? "";
        f.close();
        const [list, err] = parseTokenFile(text, path);
        if (list === undefined) return $multi(undefined, err);
        if (list.length === 0) return $multi(undefined, `admin_tokens_file ${path} has no tokens`);
        for (const [, s] of ipairs(list)) specs[specs.length] = s;
    }
    hmacKey = randomKey();
    const out: TokenEntry[] = [];
    for (const [i, s] of ipairs(specs)) {
        const d = digest(s.token);
        for (const [, prev] of ipairs(out)) {
            if (prev.digest === d) return $multi(undefined, `admin tokens "${prev.name}" and "${s.name}" are the same token`);
        }
        if (s.token.length < SHORT_TOKEN) {
            ngx.log(ngx.WARN, "dyups: admin token \"", s.name, "\" is shorter than ", SHORT_TOKEN,
                " characters; use a long random one (openssl rand -hex 32)");
        }
        out[i - 1] = { digest: d, role: s.role, name: s.name };
    }
    entries = out;
    tokenCount = out.length;
    const hosts: LuaTable<string, boolean> = new LuaTable();
    if (o.interface_hosts !== undefined) {
        for (const [, h] of ipairs(o.interface_hosts)) hosts.set(lower(h), true);
    }
    extraHosts = hosts;
    return $multi(tokenCount, undefined);
}

/** true when tokens are configured (the interface then needs one on every request) */
export function tokensConfigured(): boolean {
    return tokenCount > 0;
}

/** The configured token that `token` is, or undefined. Compares with every entry, in constant time. */
function lookup(token: string): TokenEntry | undefined {
    const d = digest(token);
    let found: TokenEntry | undefined;
    for (const [, e] of ipairs(entries)) {
        if (sameDigest(d, e.digest) && found === undefined) found = e;
    }
    return found;
}

/** A loopback client: 127.0.0.0/8, ::1, ::ffff:127.0.0.0/104, or a unix-socket connection. */
export function loopbackAddress(a: string): boolean {
    if (a === "unix:") return true;
    const size = parseIp(a);
    if (size === 4) return addrBytes[0] === 127;
    if (size !== 16) return false;
    for (let i = 0; i < 10; i++) if (addrBytes[i] !== 0) return false;
    if (addrBytes[10] === 0xff && addrBytes[11] === 0xff) return addrBytes[12] === 127;
    if (addrBytes[10] !== 0 || addrBytes[11] !== 0) return false;
    return addrBytes[12] === 0 && addrBytes[13] === 0 && addrBytes[14] === 0 && addrBytes[15] === 1;
}

/** The host part of a Host header ("name:port", "[v6]:port"), lowercased, without a trailing dot. */
function hostName(host: string): string {
    let h = lower(host);
    if (sub(h, 1, 1) === "[") {
        const [close] = find(h, "]", 2, true);
        return close === undefined ? h : sub(h, 2, close - 1);
    }
    const [name] = match(h, "^([^:]*):%d*$");
    if (name !== undefined) h = name;
    if (sub(h, -1) === ".") h = sub(h, 1, -2);
    return h;
}

/** A Host the loopback mode accepts: a loopback address, localhost, *.localhost, or interface_hosts. */
export function loopbackHost(host: string): boolean {
    const h = hostName(host);
    if (h === "localhost" || sub(h, -10) === ".localhost") return true;
    if (extraHosts.get(h) === true) return true;
    return loopbackAddress(h);
}

/** "host[:port]" of an Origin, without the scheme's default port; undefined when it is not an origin. */
function originAuthority(origin: string): LuaMultiReturn<[string | undefined, string | undefined]> {
    const [scheme, authority] = match(lower(origin), "^(%a[%w+.-]*)://([^/]+)$");
    return $multi(scheme, authority);
}

function sameAuthority(scheme: string, authority: string, host: string): boolean {
    const h = lower(host);
    if (authority === h) return true;
    const def = scheme === "https" ? ":443" : scheme === "http" ? ":80" : undefined;
    if (def === undefined) return false;
    if (sub(authority, -def.length) === def) return sub(authority, 1, -def.length - 1) === h;
    return sub(h, -def.length) === def && sub(h, 1, -def.length - 1) === authority;
}

/** The reason a write is cross-site, or undefined. */
function crossSite(req: RequestInfo): string | undefined {
    const origin = req.origin;
    if (origin !== undefined) {
        const [scheme, authority] = originAuthority(origin);
        if (scheme !== undefined && authority !== undefined && req.host !== undefined && sameAuthority(scheme, authority, req.host)) {
            return undefined;
        }
        return "forbidden: cross-site request refused (its Origin is not this interface); writes from web pages are not accepted";
    }
    if (req.fetchSite === "cross-site" || req.fetchSite === "same-site") {
        return "forbidden: cross-site request refused (Sec-Fetch-Site); writes from web pages are not accepted";
    }
    return undefined;
}

/** The rate-limit key of a client: the IPv4 address, the IPv6 /64, or the text as is. */
export function clientKey(client: string): string {
    const size = parseIp(client);
    if (size !== 16) return client;
    return string.format("v6:%02x%02x%02x%02x%02x%02x%02x%02x", addrBytes[0], addrBytes[1], addrBytes[2],
        addrBytes[3], addrBytes[4], addrBytes[5], addrBytes[6], addrBytes[7]);
}

function countFailure(o: Options, key: string, client: string, why: string): void {
    const [n, err] = addFailure(key, o.auth_fail_window);
    if (n === undefined) {
        ngx.log(ngx.ERR, "dyups: ", err);
        return;
    }
    ngx.log(ngx.INFO, "dyups: failed authentication at the interface from ", client, ": ", why);
    if (n === o.auth_fail_limit) {
        ngx.log(ngx.WARN, "dyups: ", n, " failed authentications at the interface from ", client, " within ",
            o.auth_fail_window, " s: its requests are refused (429) until the window ends");
    }
}

/**
 * The token an Authorization header presents: `Bearer TOKEN`, or `Basic base64(USER:TOKEN)` (what a browser
 * sends after the dashboard's Basic challenge; USER is ignored). undefined: neither.
 */
function presentedToken(auth: string): string | undefined {
    const [bearer] = match(auth, "^%s*[Bb][Ee][Aa][Rr][Ee][Rr]%s+(%S+)%s*$");
    if (bearer !== undefined) return bearer;
    const [b64] = match(auth, "^%s*[Bb][Aa][Ss][Ii][Cc]%s+(%S+)%s*$");
    if (b64 === undefined) return undefined;
    const decoded = ngx.decode_base64(b64);
    if (decoded === undefined) return undefined;
    const [password] = match(decoded, "^[^:]*:(.+)$");
    return password;
}

function authenticate(req: RequestInfo, write: boolean): LuaMultiReturn<[WriteSource, undefined] | [undefined, Refusal]> {
    const o = getOptions();
    const key = clientKey(req.client);
    if (failures(key) >= o.auth_fail_limit) {
        const left = math.max(1, math.ceil(windowLeft(key)));
        return $multi(undefined, {
            status: 429, retryAfter: left,
            body: `too many failed authentications from ${req.client}; try again in ${left} s`,
        });
    }
    const auth = req.authorization;
    if (auth === undefined) {
        return $multi(undefined, { status: 401, authenticate: REALM, body: "authentication required: send the header Authorization: Bearer TOKEN" });
    }
    const token = presentedToken(auth);
    const entry = token === undefined ? undefined : lookup(token);
    if (entry === undefined) {
        countFailure(o, key, req.client, token === undefined ? "not a Bearer token" : "unknown token");
        return $multi(undefined, {
            status: 401, authenticate: `${REALM}, error="invalid_token"`,
            body: token === undefined ? "invalid Authorization header: expected Bearer TOKEN" : "invalid token",
        });
    }
    if (write && entry.role !== "write") {
        return $multi(undefined, { status: 403, body: `forbidden: token "${entry.name}" has the read role; ${req.method} needs a write token` });
    }
    return $multi({ kind: "http", client: req.client, token: entry.name, role: entry.role }, undefined);
}

/**
 * The access gate. Returns who is asking (the source the write pipeline records), or why not. Content
 * phase (the rate limit reads and writes shm).
 */
export function admit(req: RequestInfo): LuaMultiReturn<[WriteSource, undefined] | [undefined, Refusal]> {
    const write = req.method !== "GET" && req.method !== "HEAD";
    if (write) {
        const why = crossSite(req);
        if (why !== undefined) return $multi(undefined, { status: 403, body: why });
    }
    if (tokenCount > 0) return authenticate(req, write);
    if (getOptions().interface_access !== "any") {
        if (!loopbackAddress(req.client)) {
            return $multi(undefined, {
                status: 403,
                body: `forbidden: with no admin token configured the interface serves loopback clients only (this client is ${req.client}); ` +
                    `configure tokens with the init() option admin_tokens_file or admin_tokens, or set interface_access = "any" ` +
                    `to serve every client without authentication`,
            });
        }
        if (req.host !== undefined && !loopbackHost(req.host)) {
            return $multi(undefined, {
                status: 403,
                body: "forbidden: the Host header is not a loopback name or address (DNS rebinding protection); " +
                    "list the name in the init() option interface_hosts, or configure admin tokens",
            });
        }
    }
    return $multi({ kind: "http", client: req.client, role: "write" }, undefined);
}
