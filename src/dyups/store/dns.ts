/** @noSelfInFile */
// What DNS re-resolution keeps in the dict: one QueryState per query (dns:q:<key>), written by the holder
// of the dns lease only and read by any worker (a new holder takes over from it; /status shows it), and the
// index of the queries in use (dns:names). Phases: timer (writes), content (/status reads).
import * as cjson from "cjson.safe";
import type { QueryState } from "../dns/policy";
import { dict } from "./dict";
import { DNS_NAMES, DNS_QUERY_PREFIX } from "./keys";

/** The stored state of query KEY, or undefined (none, or not decodable). */
export function loadQuery(key: string): QueryState | undefined {
    const [raw] = dict().get(DNS_QUERY_PREFIX + key);
    if (raw === undefined) return undefined;
    const [st] = cjson.decode(raw as string);
    if (st === undefined || type(st) !== "table") return undefined;
    return st as QueryState;
}

/** Stores the state of query KEY for ttl seconds. Returns true, or undefined and the reason (full dict). */
export function saveQuery(key: string, st: QueryState, ttl: number): LuaMultiReturn<[true, undefined] | [undefined, string]> {
    const [enc, eerr] = cjson.encode(st);
    if (enc === undefined) return $multi(undefined, `cannot encode: ${eerr}`);
    const [ok, err] = dict().safe_set(DNS_QUERY_PREFIX + key, enc, ttl);
    if (!ok) return $multi(undefined, err ?? "unknown error");
    return $multi(true, undefined);
}

/** Forgets query KEY (no upstream uses it any more). */
export function deleteQuery(key: string): void {
    dict().delete(DNS_QUERY_PREFIX + key);
}

/** Stores the index of the queries in use: { key: [upstream names] }. */
export function writeQueryIndex(index: LuaTable<string, string[]>): void {
    const [enc] = cjson.encode(index);
    if (enc !== undefined) dict().safe_set(DNS_NAMES, enc);
}

/** The index of the queries in use, or undefined when none was written. */
export function readQueryIndex(): LuaTable<string, string[]> | undefined {
    const [raw] = dict().get(DNS_NAMES);
    if (raw === undefined) return undefined;
    const [index] = cjson.decode(raw as string);
    if (index === undefined || type(index) !== "table") return undefined;
    return index as LuaTable<string, string[]>;
}
