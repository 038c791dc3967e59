/** @noSelfInFile */
// JSON in and out for the JSON API, independent of which lua-cjson the runtime has (Debian's 2.1.0 tells no
// empty array from an empty object, in either direction).
//   decodeJson  a strict decoder of our own (RFC 8259): the text must be valid UTF-8; nesting at most
//               MAX_DEPTH; no NaN, Infinity, hex, leading zeros, control characters in strings, lone
//               surrogates, duplicate keys or trailing text. Arrays come back marked (isJsonArray), so [] and
//               {} stay apart; null is JSON_NULL (cjson.null). Numbers are Lua numbers (1e400 is inf: the
//               callers check ranges).
//   encodeJson  output with real arrays: a table is an array when marked (jsonArray(), or decoded as one)
//               or when it is a non-empty sequence; object keys are sorted (stable answers, readable diffs)
// Pure (cjson only encodes strings): runs in the content phase and under LuaJIT in specs. Cost: O(size of
// the text / value); the decoder keeps the text only during the call.
import * as cjson from "cjson.safe";
import type { Result } from "../errors";

/** Deepest nesting an input may have (an upstream document needs 4). */
export const MAX_DEPTH = 16;

/** JSON null as decoded (a light userdata: not a table, not nil) */
export const JSON_NULL: unknown = cjson.null;

const find = string.find;
/** bytes 0x80..0xff (a TypeScript "\x80" would compile to the UTF-8 of U+0080) */
const HIGH = "[" + string.char(0x80) + "-" + string.char(0xff) + "]";
const byte = string.byte;
const format = string.format;
const floor = math.floor;

/** The byte offset of the first invalid UTF-8 sequence of s, or undefined (RFC 3629: no overlongs, no surrogates). */
export function invalidUtf8At(s: string): number | undefined {
    const len = s.length;
    let i = 1;
    for (;;) {
        const [at] = find(s, HIGH, i);
        if (at === undefined) return undefined;
        const c = byte(s, at);
        let n: number;
        let lo = 0x80;
        let hi = 0xbf;
        if (c >= 0xc2 && c <= 0xdf) n = 1;
        else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c === 0xe0) lo = 0xa0;
            if (c === 0xed) hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c === 0xf0) lo = 0x90;
            if (c === 0xf4) hi = 0x8f;
        } else return at;
        if (at + n > len) return at;
        const c2 = byte(s, at + 1);
        if (c2 < lo || c2 > hi) return at;
        for (let k = 2; k <= n; k++) {
            const ck = byte(s, at + k);
            if (ck < 0x80 || ck > 0xbf) return at;
        }
        i = at + n + 1;
    }
}

const arrays: LuaTable<object, boolean> = setmetatable(new LuaTable<object, boolean>(), { __mode: "k" });

/** true when `t` is a JSON array (decoded as one, or marked by jsonArray) */
export function isJsonArray(t: unknown): boolean {
    return type(t) === "table" && arrays.get(t as object) === true;
}

/** Marks `t` (default: a new table) as a JSON array, so it encodes as [] when empty. */
export function jsonArray<T>(t?: T[]): T[] {
    const a = t ?? [];
    arrays.set(a, true);
    return a;
}

// ---------------------------------------------------------------------------------------------------------
// The decoder. Module state for one call (the content phase never yields inside it).

let src = "";
let at = 1;
let failure = "";

const sub = string.sub;
const char = string.char;

function fail(msg: string): LuaMultiReturn<[false, undefined]> {
    failure = `${msg} at byte ${at}`;
    return $multi(false, undefined);
}

function skip(): void {
    const [, e] = find(src, "^[ \t\n\r]*", at);
    at = (e as number) + 1;
}

const ESCAPES = new LuaTable<number, string>();
ESCAPES.set(34, '"');
ESCAPES.set(92, "\\");
ESCAPES.set(47, "/");
ESCAPES.set(98, "\b");
ESCAPES.set(102, "\f");
ESCAPES.set(110, "\n");
ESCAPES.set(114, "\r");
ESCAPES.set(116, "\t");

function utf8(cp: number): string {
    if (cp < 0x80) return char(cp);
    if (cp < 0x800) return char(0xc0 + floor(cp / 64), 0x80 + (cp % 64));
    if (cp < 0x10000) return char(0xe0 + floor(cp / 4096), 0x80 + (floor(cp / 64) % 64), 0x80 + (cp % 64));
    return char(0xf0 + floor(cp / 262144), 0x80 + (floor(cp / 4096) % 64), 0x80 + (floor(cp / 64) % 64), 0x80 + (cp % 64));
}

/** 4 hex digits at i, or undefined */
function hex4(i: number): number | undefined {
    const h = sub(src, i, i + 3);
    if (find(h, "^%x%x%x%x$")[0] === undefined) return undefined;
    return tonumber(h, 16);
}

function parseString(): LuaMultiReturn<[boolean, string | undefined]> {
    at = at + 1; // the opening quote
    const parts: string[] = [];
    for (;;) {
        const [s] = find(src, '["\\%z\x01-\x1f]', at);
        if (s === undefined) return fail("unterminated string");
        if (s > at) parts[parts.length] = sub(src, at, s - 1);
        const c = byte(src, s);
        at = s;
        if (c === 34) {
            at = s + 1;
            return $multi(true, table.concat(parts));
        }
        if (c < 32) return fail("control character in a string");
        const e = byte(src, s + 1);
        const simple = e !== undefined ? ESCAPES.get(e) : undefined;
        if (simple !== undefined) {
            parts[parts.length] = simple;
            at = s + 2;
        } else if (e === 117 /* u */) {
            let cp = hex4(s + 2);
            if (cp === undefined) return fail("bad \\u escape");
            at = s + 6;
            if (cp >= 0xd800 && cp <= 0xdbff) {
                const lo = sub(src, at, at + 1) === "\\u" ? hex4(at + 2) : undefined;
                if (lo === undefined || lo < 0xdc00 || lo > 0xdfff) return fail("lone surrogate in a \\u escape");
                cp = 0x10000 + (cp - 0xd800) * 1024 + (lo - 0xdc00);
                at = at + 6;
            } else if (cp >= 0xdc00 && cp <= 0xdfff) {
                return fail("lone surrogate in a \\u escape");
            }
            parts[parts.length] = utf8(cp);
        } else {
            return fail("bad escape in a string");
        }
    }
}

function parseNumber(): LuaMultiReturn<[boolean, number | undefined]> {
    const [s, e] = find(src, "^-?%d+", at);
    if (s === undefined) return fail("bad number");
    let stop = e as number;
    const digits = sub(src, byte(src, s) === 45 ? s + 1 : s, stop);
    if (digits.length > 1 && byte(digits, 1) === 48) return fail("leading zero in a number");
    const [, fe] = find(src, "^%.%d+", stop + 1);
    if (fe !== undefined) stop = fe;
    const [, ee] = find(src, "^[eE][-+]?%d+", stop + 1);
    if (ee !== undefined) stop = ee;
    const v = tonumber(sub(src, s, stop));
    if (v === undefined) return fail("bad number");
    at = stop + 1;
    return $multi(true, v);
}

function parseValue(depth: number): LuaMultiReturn<[boolean, unknown]> {
    skip();
    const c = byte(src, at);
    if (c === undefined) return fail("unexpected end of the text");
    if (c === 123 /* { */ || c === 91 /* [ */) {
        if (depth >= MAX_DEPTH) return fail(`nested deeper than ${MAX_DEPTH} levels`);
        return c === 123 ? parseObject(depth + 1) : parseArray(depth + 1);
    }
    if (c === 34) return parseString();
    if (c === 45 || (c >= 48 && c <= 57)) return parseNumber();
    if (sub(src, at, at + 3) === "true") {
        at = at + 4;
        return $multi(true, true);
    }
    if (sub(src, at, at + 4) === "false") {
        at = at + 5;
        return $multi(true, false);
    }
    if (sub(src, at, at + 3) === "null") {
        at = at + 4;
        return $multi(true, JSON_NULL);
    }
    return fail(`unexpected character ${cjson.encode(sub(src, at, at))[0] as string}`);
}

function parseObject(depth: number): LuaMultiReturn<[boolean, unknown]> {
    at = at + 1;
    const obj = new LuaTable<string, unknown>();
    skip();
    if (byte(src, at) === 125) {
        at = at + 1;
        return $multi(true, obj);
    }
    for (;;) {
        skip();
        if (byte(src, at) !== 34) return fail("expected a string key");
        const [ok, key] = parseString();
        if (!ok) return $multi(false, undefined);
        skip();
        if (byte(src, at) !== 58) return fail("expected \":\"");
        at = at + 1;
        const [vok, v] = parseValue(depth);
        if (!vok) return $multi(false, undefined);
        if (obj.has(key as string)) return fail(`duplicate key ${cjson.encode(string.sub(key as string, 1, 64))[0] as string}`);
        obj.set(key as string, v);
        skip();
        const c = byte(src, at);
        at = at + 1;
        if (c === 125) return $multi(true, obj);
        if (c !== 44) {
            at = at - 1;
            return fail("expected \",\" or \"}\"");
        }
    }
}

function parseArray(depth: number): LuaMultiReturn<[boolean, unknown]> {
    at = at + 1;
    const arr = new LuaTable<number, unknown>();
    arrays.set(arr, true);
    skip();
    if (byte(src, at) === 93) {
        at = at + 1;
        return $multi(true, arr);
    }
    let n = 0;
    for (;;) {
        const [vok, v] = parseValue(depth);
        if (!vok) return $multi(false, undefined);
        n = n + 1;
        arr.set(n, v);
        skip();
        const c = byte(src, at);
        at = at + 1;
        if (c === 93) return $multi(true, arr);
        if (c !== 44) {
            at = at - 1;
            return fail("expected \",\" or \"]\"");
        }
    }
}

/** Decodes a request body: [value] or [undefined, reason] (never raises). */
export function decodeJson(text: string): Result<unknown> {
    const bad = invalidUtf8At(text);
    if (bad !== undefined) return $multi(undefined, `the body is not valid UTF-8 (byte ${bad})`);
    src = text;
    at = 1;
    let [ok, v] = parseValue(0);
    if (ok) {
        skip();
        if (at <= text.length) [ok] = fail("text after the JSON value");
    }
    src = "";
    if (!ok) return $multi(undefined, `the body is not valid JSON: ${failure}`);
    return $multi(v, undefined);
}

function isSequence(t: LuaTable<AnyNotNil, unknown>): boolean {
    let n = 0;
    for (const [k] of pairs(t)) {
        if (type(k) !== "number") return false;
        n = n + 1;
    }
    return n > 0 && n === t.length();
}

function encodeNumber(v: number): string {
    if (v !== v || v === math.huge || v === -math.huge) return "null";
    if (floor(v) === v && v > -9007199254740992 && v < 9007199254740992) return format("%d", v);
    const short = format("%.14g", v);
    return tonumber(short) === v ? short : format("%.17g", v);
}

/** A JSON string; "/" as is (lua-cjson writes \/: after its escapes a \/ can only be that one). */
function str(s: string): string {
    const [text] = cjson.encode(s);
    return string.gsub(text as string, "\\/", "/")[0];
}

function encodeInto(v: unknown, out: string[]): void {
    const t = type(v);
    if (t === "string") {
        out[out.length] = str(v as string);
    } else if (t === "number") {
        out[out.length] = encodeNumber(v as number);
    } else if (t === "boolean") {
        out[out.length] = v === true ? "true" : "false";
    } else if (t === "table") {
        const tbl = v as LuaTable<AnyNotNil, unknown>;
        if (arrays.get(tbl) === true || isSequence(tbl)) {
            out[out.length] = "[";
            const n = tbl.length();
            for (let i = 1; i <= n; i++) {
                if (i > 1) out[out.length] = ",";
                encodeInto(tbl.get(i), out);
            }
            out[out.length] = "]";
            return;
        }
        const keys: string[] = [];
        for (const [k] of pairs(tbl)) {
            if (type(k) === "string") keys[keys.length] = k as string;
        }
        table.sort(keys);
        out[out.length] = "{";
        for (const [i, k] of ipairs(keys)) {
            if (i > 1) out[out.length] = ",";
            out[out.length] = str(k as string);
            out[out.length] = ":";
            encodeInto(tbl.get(k), out);
        }
        out[out.length] = "}";
    } else {
        out[out.length] = "null"; // nil, JSON null, anything else
    }
}

/** The JSON text of v (see the header for arrays). */
export function encodeJson(v: unknown): string {
    const out: string[] = [];
    encodeInto(v, out);
    return table.concat(out);
}
