/** @noSelfInFile */
// What a write would change (the dry-run answer): servers added, removed and changed, and the upstream-wide
// settings that change. Servers are matched by their address as written; an address listed several times
// is matched in order. Pure: no ngx.*, no shm. Cost: O(servers).
import type { RenderServer, RenderSpec } from "../parse/render";
import { serverDoc, settingsDoc } from "./document";
import { encodeJson, jsonArray } from "./json";

const SERVER_FIELDS = ["weight", "max_fails", "fail_timeout", "max_conns", "backup", "down", "drain", "resolve", "service"];
const SETTINGS = ["method", "hash_key", "hash_consistent", "random_two", "keepalive", "keepalive_timeout", "keepalive_requests", "zone", "check"];

type Doc = Record<string, unknown>;

/** Values compare by their JSON text (a check is an object). */
function same(a: unknown, b: unknown): boolean {
    if (a === b) return true;
    if (type(a) !== "table" || type(b) !== "table") return false;
    return encodeJson(a) === encodeJson(b);
}

/** `{ field: { from, to } }` for the fields that differ, or undefined when none does. */
function changes(from: Doc, to: Doc, fields: string[]): Doc | undefined {
    let out: Doc | undefined;
    for (const [, f] of ipairs(fields)) {
        if (!same(from[f], to[f])) {
            out = out ?? {};
            out[f] = { from: from[f], to: to[f] };
        }
    }
    return out;
}

export interface Diff {
    added: Doc[];
    removed: Doc[];
    changed: Doc[];
    /** upstream-wide settings that change: { method: { from, to } }; {} when none */
    settings: Doc;
}

/** The diff from `before` (undefined: the upstream does not exist) to `after` (undefined: deleted). */
export function diffSpecs(before: RenderSpec | undefined, after: RenderSpec | undefined): Diff {
    const added = jsonArray<Doc>();
    const removed = jsonArray<Doc>();
    const changed = jsonArray<Doc>();
    const olds: RenderServer[] = before !== undefined ? before.servers : [];
    const news: RenderServer[] = after !== undefined ? after.servers : [];
    // old servers by address, in order; a match takes the first one left
    const byAddr = new LuaTable<string, number[]>();
    for (const [i, s] of ipairs(olds)) {
        const list = byAddr.get(s.addr) ?? [];
        list[list.length] = i;
        byAddr.set(s.addr, list);
    }
    const matched = new LuaTable<number, boolean>();
    for (const [, s] of ipairs(news)) {
        const list = byAddr.get(s.addr);
        let oi: number | undefined;
        if (list !== undefined) {
            for (const [, i] of ipairs(list)) {
                if (oi === undefined && matched.get(i) !== true) oi = i;
            }
        }
        if (oi === undefined) {
            added[added.length] = serverDoc(s);
        } else {
            matched.set(oi, true);
            const c = changes(serverDoc(olds[oi - 1]), serverDoc(s), SERVER_FIELDS);
            if (c !== undefined) changed[changed.length] = { server: s.addr, changes: c };
        }
    }
    for (const [i, s] of ipairs(olds)) {
        if (matched.get(i) !== true) removed[removed.length] = serverDoc(s);
    }
    let settings: Doc = {};
    if (before !== undefined && after !== undefined) settings = changes(settingsDoc(before), settingsDoc(after), SETTINGS) ?? {};
    return { added, removed, changed, settings };
}
