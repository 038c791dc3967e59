/** @noSelfInFile */
// Renders an upstream spec back to the nginx `upstream {}` grammar: the body that parseBody turns into the
// same spec. The JSON API (ops/) never writes a spec directly: it edits a spec, renders it here, and sends the
// text through the same parser and validation as a POST, so the command log keeps one full body per change.
// Pure: no ngx.*; runs in the content phase (JSON writes) and under plain LuaJIT in specs.
//
// Identity: for every spec S that parseBody returns, parseBody(renderBody(S)) equals S (spec/parse/render_spec.lua
// checks it on generated bodies). Only what the spec holds is rendered: comments, layout, the order of
// directives, `zone`'s size, and parameters equal to their defaults are not kept. Times are rendered in whole
// seconds ("30s") or milliseconds ("1500ms"), exact for any time below 2^52 ms.
// Cost: O(servers).
import type { CheckSpec, UpstreamSpec } from "../model";
import { DEFAULT_FAIL_TIMEOUT, DEFAULT_MAX_FAILS, DEFAULT_WEIGHT } from "../model";
import { DEFAULT_KEEPALIVE_REQUESTS, DEFAULT_KEEPALIVE_TIMEOUT } from "./upstream";

/** What renderBody reads of a server: a parsed ServerSpec, or a draft built by the JSON API. */
export interface RenderServer {
    addr: string;
    weight: number;
    maxFails: number;
    failTimeout: number;
    maxConns: number;
    backup: boolean;
    down: boolean;
    drain?: boolean;
    resolve: boolean;
    service?: string;
}

/** What renderBody reads of an upstream (UpstreamSpec, or the JSON API's draft). */
export interface RenderSpec {
    servers: RenderServer[];
    method: UpstreamSpec["method"];
    hashKey?: string;
    hashConsistent: boolean;
    randomTwo: boolean;
    keepalive: number;
    keepaliveTimeout: number;
    keepaliveRequests: number;
    zone?: string;
    check?: CheckSpec;
}

const find = string.find;
const gsub = string.gsub;
const floor = math.floor;

/** Bytes a bare word may hold: nothing the tokenizer treats specially (blanks, ; { } # quotes \). */
const BARE = "^[%w._:/%[%]=$@%-+,~*%%!?&|^<>()]+$";

const ESCAPES: Record<string, string> = { "\\": "\\\\", "\"": "\\\"", "\n": "\\n", "\r": "\\r", "\t": "\\t" };

/** A double-quoted token that the tokenizer reads back as `s` (its escapes: \\ \" \n \r \t). */
export function quoted(s: string): string {
    return '"' + gsub(s, '[\\"\n\r\t]', ESCAPES)[0] + '"';
}

/** `s` as one token: bare when that is safe, else quoted. */
export function word(s: string): string {
    if (s !== "" && find(s, BARE)[0] !== undefined) return s;
    return quoted(s);
}

/** A time in seconds as nginx writes it: whole seconds "30s", else milliseconds "1500ms". */
export function renderSeconds(sec: number): string {
    if (floor(sec) === sec) return `${string.format("%d", sec)}s`;
    return `${string.format("%d", floor(sec * 1000 + 0.5))}ms`;
}

function int(n: number): string {
    return string.format("%d", n);
}

function serverLine(s: RenderServer): string {
    const parts: string[] = ["server", word(s.addr)];
    if (s.weight !== DEFAULT_WEIGHT) parts[parts.length] = `weight=${int(s.weight)}`;
    if (s.maxFails !== DEFAULT_MAX_FAILS) parts[parts.length] = `max_fails=${int(s.maxFails)}`;
    if (s.failTimeout !== DEFAULT_FAIL_TIMEOUT) parts[parts.length] = `fail_timeout=${renderSeconds(s.failTimeout)}`;
    if (s.maxConns !== 0) parts[parts.length] = `max_conns=${int(s.maxConns)}`;
    if (s.backup) parts[parts.length] = "backup";
    if (s.down) parts[parts.length] = "down";
    if (s.drain === true) parts[parts.length] = "drain";
    if (s.resolve) parts[parts.length] = "resolve";
    if (s.service !== undefined) parts[parts.length] = word(`service=${s.service}`);
    return table.concat(parts, " ") + ";";
}

function checkLines(c: CheckSpec, out: string[]): void {
    let line = `check interval=${int(c.interval)} rise=${int(c.rise)} fall=${int(c.fall)} timeout=${int(c.timeout)} type=${c.type}`;
    if (!c.defaultDown) line = line + " default_down=false";
    if (c.port !== 0) line = line + ` port=${int(c.port)}`;
    out[out.length] = line + ";";
    if (c.httpSend !== undefined) out[out.length] = `check_http_send ${quoted(c.httpSend)};`;
    const expect = c.expectAlive;
    if (expect !== undefined && expect.length > 0) out[out.length] = `check_http_expect_alive ${table.concat(expect, " ")};`;
    if (c.keepaliveRequests !== undefined) out[out.length] = `check_keepalive_requests ${int(c.keepaliveRequests)};`;
}

/**
 * The body of `spec`, one directive per line: the method, the servers in order, keepalive, zone, check.
 * Contract: a spec from parseBody (or a draft of the same shape) renders to a body that parses to it. A hash
 * method without a key is a caller's bug and raises.
 */
export function renderBody(spec: RenderSpec): string {
    const out: string[] = [];
    const m = spec.method;
    if (m === "least_conn") out[0] = "least_conn;";
    else if (m === "ip_hash") out[0] = "ip_hash;";
    else if (m === "random") out[0] = spec.randomTwo ? "random two;" : "random;";
    else if (m === "hash") {
        const key = spec.hashKey;
        if (key === undefined) error("bad argument #1 to 'renderBody' (hash method without a key)", 2);
        out[0] = spec.hashConsistent ? `hash ${word(key)} consistent;` : `hash ${word(key)};`;
    }
    for (const [, s] of ipairs(spec.servers)) out[out.length] = serverLine(s);
    if (spec.keepalive > 0) out[out.length] = `keepalive ${int(spec.keepalive)};`;
    if (spec.keepaliveTimeout !== DEFAULT_KEEPALIVE_TIMEOUT) out[out.length] = `keepalive_timeout ${renderSeconds(spec.keepaliveTimeout)};`;
    if (spec.keepaliveRequests !== DEFAULT_KEEPALIVE_REQUESTS) out[out.length] = `keepalive_requests ${int(spec.keepaliveRequests)};`;
    if (spec.zone !== undefined) out[out.length] = `zone ${word(spec.zone)};`;
    if (spec.check !== undefined) checkLines(spec.check, out);
    return table.concat(out, "\n") + "\n";
}
