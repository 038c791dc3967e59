/** @noSelfInFile */
// JSON in and out for the JSON API, independent of which lua-cjson the runtime has (Debian's 2.1.0 has no
// empty_array, so an empty Lua table always encodes as {}).
//   decodeJson  strict input: the text must be valid UTF-8, nesting at most MAX_DEPTH, no NaN/Infinity/hex
//               (cjson.safe instance of our own: its settings do not touch other users of cjson)
//   encodeJson  output with real arrays: a table is an array when jsonArray() marked it or when it is a
//               non-empty sequence; object keys are sorted (stable answers, readable diffs)
// Pure but for cjson: runs in the content phase and under LuaJIT in specs. Cost: O(size of the value).
import * as cjson from "cjson.safe";
import type { Result } from "../errors";

/** Deepest nesting an input may have (an upstream document needs 4). */
export const MAX_DEPTH = 16;

const decoder = cjson.new();
decoder.decode_max_depth(MAX_DEPTH);
decoder.decode_invalid_numbers(false);

/** JSON null as decoded */
export const JSON_NULL: unknown = decoder.null;

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

/** Decodes a request body: [value] or [undefined, reason] (never raises). */
export function decodeJson(text: string): Result<unknown> {
    const bad = invalidUtf8At(text);
    if (bad !== undefined) return $multi(undefined, `the body is not valid UTF-8 (byte ${bad})`);
    const [v, err] = decoder.decode(text);
    if (v === undefined) return $multi(undefined, `the body is not valid JSON: ${err}`);
    return $multi(v, undefined);
}

const arrays: LuaTable<object, boolean> = setmetatable(new LuaTable<object, boolean>(), { __mode: "k" });

/** Marks `t` (default: a new table) as a JSON array, so it encodes as [] when empty. */
export function jsonArray<T>(t?: T[]): T[] {
    const a = t ?? [];
    arrays.set(a, true);
    return a;
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
