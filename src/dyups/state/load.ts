/** @noSelfInFile */
// Reading the state file at start-up (init, master, on a fresh dict), trusting nothing in it. The file is
// checked as a whole (JSON, the format tag, `upstreams` an array), then each record on its own: an object
// with a name that passes the same validation as a POST (lowercased like a POST's), a string body, a plain
// source, and endpoints that are arrays of addresses the upstream parser accepts. The body itself goes
// through the write pipeline (parse, validate, sandbox build) in startup.ts, like a POST.
// A file that is not a state at all is moved aside (a name nothing else takes); a record that fails is
// reported and skipped, and startup.ts keeps a copy of the file (the next save would drop the record).
// Nothing here raises for any content: nginx always starts. Costs: one read and one decode of the file.
import * as cjson from "cjson.safe";
import type { Endpoint } from "../model";
import { parseBody, validateName } from "../parse/upstream";
import { FORMAT } from "./format";
import { moveAside, readWhole } from "./files";

export interface StateEntry {
    /** 1-based position in the file's upstreams array */
    index: number;
    /** validated and lowercased */
    name: string;
    body: string;
    source: string;
    endpoints?: Endpoint[][];
    /** the spelling to list it by (the name in another case) */
    display?: string;
    /** cluster mode: the etcd revision it had */
    etcd?: number;
}

export interface Rejection {
    index: number;
    name?: string;
    reason: string;
}

export interface StateLoad {
    /** the file's bytes (undefined: no file, or it could not be read) */
    text?: string;
    entries: StateEntry[];
    rejected: Rejection[];
    confSeen?: LuaTable<string, string>;
    /** the file as a whole could not be used */
    fileError?: string;
    /** where a file that is not a state was moved */
    movedTo?: string;
    /** smaller problems that lose nothing (an ignored conf_seen) */
    notes: string[];
}

/** A short description of a JSON value for a reason ("a number (42)", "null"). */
function describe(v: unknown): string {
    const t = type(v);
    if (v === cjson.null) return "null";
    if (t === "number" || t === "boolean") return `a ${t} (${tostring(v)})`;
    if (t === "string") return "a string";
    if (t === "table") return "an array or object";
    return t;
}

/** true when T is a JSON array (cjson: keys 1..n only; an empty table counts as an empty array). */
function isArray(t: LuaTable<AnyNotNil, unknown>): boolean {
    let n = 0;
    for (const [k] of pairs(t)) {
        if (type(k) !== "number") return false;
        n = n + 1;
    }
    return n === t.length();
}

function isInteger(v: unknown, min: number, max: number): boolean {
    return type(v) === "number" && math.floor(v as number) === v && (v as number) >= min && (v as number) <= max;
}

/** The problem with one saved endpoint, or undefined. Its address must be what the parser reads as one. */
function endpointProblem(e: unknown): string | undefined {
    if (type(e) !== "table") return `an endpoint is ${describe(e)}, not an object`;
    const t = e as LuaTable<string, unknown>;
    const host = t.get("host");
    const port = t.get("port");
    const weight = t.get("weight");
    if (type(host) !== "string") return "an endpoint has no host";
    const h = host as string;
    if (!isInteger(port, 0, 65535)) return `endpoint ${h} has a bad port`;
    if (weight !== undefined && !isInteger(weight, 1, 1000000)) return `endpoint ${h} has a bad weight`;
    const unix = string.sub(h, 1, 5) === "unix:";
    if (unix !== (port === 0)) return `endpoint ${h} has a bad port`;
    const addr = unix ? h : string.find(h, ":", 1, true)[0] !== undefined ? `[${h}]:${port as number}` : `${h}:${port as number}`;
    const [spec, err] = parseBody(`server ${addr};`);
    if (spec === undefined) return `endpoint ${addr}: ${err}`;
    const s = spec.servers[0];
    if (spec.servers.length !== 1 || s.kind === "name" || s.host !== h || s.port !== port) return `endpoint ${addr} is not an address`;
    return undefined;
}

function endpointsProblem(v: unknown): string | undefined {
    if (type(v) !== "table" || !isArray(v as LuaTable<AnyNotNil, unknown>)) return `endpoints is ${describe(v)}, not an array`;
    for (const [, eps] of ipairs(v as unknown[])) {
        if (type(eps) !== "table" || !isArray(eps as LuaTable<AnyNotNil, unknown>)) return "endpoints must be an array of arrays";
        for (const [, e] of ipairs(eps as unknown[])) {
            const p = endpointProblem(e);
            if (p !== undefined) return p;
        }
    }
    return undefined;
}

/** Checks record i: [entry] or [undefined, rejection]. `seen`: lowercased names already taken -> index. */
function checkEntry(u: unknown, i: number, seen: LuaTable<string, number>): LuaMultiReturn<[StateEntry, undefined] | [undefined, Rejection]> {
    if (type(u) !== "table" || isArray(u as LuaTable<AnyNotNil, unknown>)) {
        return $multi(undefined, { index: i, reason: `the record is ${describe(u)}, not an object` });
    }
    const t = u as LuaTable<string, unknown>;
    const rawName = t.get("name");
    if (type(rawName) !== "string") return $multi(undefined, { index: i, reason: `its name is ${describe(rawName)}, not a string` });
    const [name, nerr] = validateName(rawName as string);
    if (name === undefined) return $multi(undefined, { index: i, name: rawName as string, reason: nerr });
    const fail = (reason: string): LuaMultiReturn<[undefined, Rejection]> => $multi(undefined, { index: i, name, reason });
    const body = t.get("body");
    if (type(body) !== "string") return fail(`its body is ${describe(body)}, not a string`);
    let source = t.get("source");
    if (source === undefined || source === cjson.null) source = "state";
    if (type(source) !== "string" || string.match(source as string, "^[%l_]+$")[0] === undefined || (source as string).length > 16) {
        return fail(`its source is ${describe(source)}, not a word`);
    }
    let endpoints = t.get("endpoints");
    if (endpoints === cjson.null) endpoints = undefined;
    if (endpoints !== undefined) {
        const p = endpointsProblem(endpoints);
        if (p !== undefined) return fail(p);
    }
    let display = t.get("display");
    if (display === cjson.null) display = undefined;
    if (display !== undefined && (type(display) !== "string" || string.lower(display as string) !== name)) {
        return fail(`its display is ${type(display) === "string" ? `"${display as string}", another name` : describe(display)}`);
    }
    let etcd = t.get("etcd");
    if (etcd === cjson.null) etcd = undefined;
    if (etcd !== undefined && !isInteger(etcd, 0, 2 ** 53)) return fail(`its etcd revision is ${describe(etcd)}`);
    const dup = seen.get(name);
    if (dup !== undefined) return fail(`duplicate of record ${dup} (names are case-insensitive)`);
    seen.set(name, i);
    return $multi({
        index: i, name, body: body as string, source: source as string, endpoints: endpoints as Endpoint[][] | undefined,
        // like a POST, a name spelled in capitals is listed as spelled
        display: (display as string | undefined) ?? (rawName !== name ? (rawName as string) : undefined), etcd: etcd as number | undefined,
    }, undefined);
}

/** The file is not a state: move it aside (nothing overwrites it) and say so. */
function unusable(load: StateLoad, path: string, reason: string): StateLoad {
    load.fileError = reason;
    const [to, merr] = moveAside(path, "corrupt");
    if (to !== undefined) load.movedTo = to;
    else load.notes[load.notes.length] = merr;
    return load;
}

/**
 * Reads and checks the state file at PATH. Never raises for any content. No file: no entries, no error.
 * A file that is not a state (not JSON, another format, upstreams not an array) is moved aside.
 */
export function readState(path: string): StateLoad {
    const load: StateLoad = { entries: [], rejected: [], notes: [] };
    const [text, rerr] = readWhole(path);
    if (text === undefined) {
        if (rerr !== undefined) load.fileError = rerr;
        return load;
    }
    load.text = text;
    const [st, derr] = cjson.decode(text);
    if (st === undefined) return unusable(load, path, `not JSON (${derr})`);
    if (type(st) !== "table" || isArray(st as LuaTable<AnyNotNil, unknown>)) return unusable(load, path, `not a JSON object but ${describe(st)}`);
    const top = st as LuaTable<string, unknown>;
    if (top.get("format") !== FORMAT) return unusable(load, path, `format is ${describe(top.get("format"))}, not "${FORMAT}"`);
    const ups = top.get("upstreams");
    if (type(ups) !== "table" || !isArray(ups as LuaTable<AnyNotNil, unknown>)) return unusable(load, path, `upstreams is ${describe(ups)}, not an array`);
    const seen: LuaTable<string, number> = new LuaTable();
    const list = ups as LuaTable<number, unknown>;
    for (let i = 1; i <= list.length(); i++) {
        const [entry, rej] = checkEntry(list.get(i), i, seen);
        if (entry !== undefined) load.entries[load.entries.length] = entry;
        else load.rejected[load.rejected.length] = rej;
    }
    const cs = top.get("conf_seen");
    if (cs !== undefined && cs !== cjson.null) {
        let ok = type(cs) === "table";
        if (ok) for (const [k, v] of pairs(cs as LuaTable<AnyNotNil, unknown>)) if (type(k) !== "string" || type(v) !== "string") ok = false;
        if (ok) load.confSeen = cs as LuaTable<string, string>;
        else load.notes[load.notes.length] = "conf_seen ignored: not an object of strings (every upstream_conf entry is applied again)";
    }
    return load;
}
