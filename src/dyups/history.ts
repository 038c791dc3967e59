/** @noSelfInFile */
// The write history: every accepted write, with its time, source, revisions and body, so operators can see
// what changed and roll an upstream back (GET /history, POST /upstream/NAME?rollback=REV, the JSON API).
//
// Recording: audit.ts calls recordWrite after every accepted write it audits (the interface, the Lua API,
// DNS re-resolutions, upstream_conf, and the cluster mode's commits when it audits them), start-up calls
// it for the upstreams it restores from the state file (source state_file: restored, not audited), and the
// cluster watcher for what a node's first read of etcd loads into an empty store (source cluster, not audited). The
// source is the WriteSource the pipeline received; nothing is re-derived. An entry holds the body of an
// update (the whole upstream, nginx syntax: what a rollback restores), none for a delete. An entry larger
// than the history's byte budget is kept without its body (counted: /status history.cut).
// A write never fails because of history: a failure to record is logged once per worker and counted
// (/status history.lost). Storage and its bounds: store/history.ts (history_size entries, an eighth of the dict).
//
// Lifetime: the shared dict's. History survives `nginx -s reload` and is lost at a restart: revisions are
// versions of the command log, which start again at a restart, so older revisions would be ambiguous.
// Phases: recordWrite wherever a write happens (content, timer, init); reads in the content phase.
// Cost: one JSON encoding and O(1) shm operations per write; a listing is O(history_size).
import * as cjson from "cjson.safe";
import type { WriteSource } from "./audit";
import type { UpstreamRecord } from "./model";
import { getOptions } from "./options";
import { readRecord } from "./store/command_log";
import { append, budget, countCut, countLost, historyStats, readEntry, window } from "./store/history";

/** One accepted write, as GET /history shows it (snake_case: it is also the stored JSON). */
export interface HistoryEntry {
    /** position in the history (grows by one per entry) */
    seq?: number;
    /** ngx.now() of the write */
    time: number;
    op: "update" | "delete";
    /** the upstream (lowercase), and its spelling when it differs */
    upstream: string;
    display?: string;
    source: { kind: string; client?: string; token?: string };
    /** what the JSON API or a rollback did: "rollback", "put", "add_server", "update_server", "remove_server", "delete" */
    action?: string;
    /** the server an action is about (its address as written) */
    server?: string;
    /** a rollback: the revision whose body it restored */
    rollback_to?: number;
    /** the upstream's revision before (0: it did not exist) and the version of this write */
    rev_before: number;
    rev_after: number;
    /** the whole upstream body after an update */
    body?: string;
    /** why an update's body is not kept */
    body_omitted?: string;
}

let warned = false;

function lost(reason: string): void {
    if (!warned) ngx.log(ngx.WARN, "dyups: a write could not be recorded in the history (the write itself succeeded): ", reason);
    warned = true;
}

/**
 * Records one accepted write. `rec`: the record an update wrote (else the current record is read, if it is
 * still at that revision). Never raises into the caller's write, never fails it: see the header.
 */
export function recordWrite(op: "update" | "delete", name: string, before: number, after: number, source: WriteSource, rec?: UpstreamRecord): void {
    const size = getOptions().history_size;
    if (size <= 0) return;
    const entry: HistoryEntry = {
        time: ngx.now(), op, upstream: name, source: { kind: source.kind, client: source.client, token: source.token },
        rev_before: before, rev_after: after,
    };
    const act = source.action;
    if (act !== undefined) {
        entry.action = act.name;
        entry.server = act.server;
        entry.rollback_to = act.revision;
    }
    if (op === "update") {
        let r = rec;
        if (r === undefined) {
            const cur = readRecord(name);
            if (cur !== undefined && cur.rev === after) r = cur;
        }
        if (r !== undefined) {
            entry.body = r.body;
            if (r.display !== undefined) entry.display = r.display;
        } else {
            entry.body_omitted = "the body was not available when the write was recorded";
        }
    }
    let [json, err] = cjson.encode(entry);
    if (json !== undefined && json.length > budget() && entry.body !== undefined) {
        entry.body = undefined;
        entry.body_omitted = "larger than the history's budget (an eighth of the shared dict)";
        countCut();
        [json, err] = cjson.encode(entry);
    }
    if (json === undefined) {
        countLost();
        return lost(`cannot encode the entry: ${err}`);
    }
    const [seq, aerr] = append(json, size);
    if (seq === undefined) lost(aerr);
}

function decodeEntry(seq: number, raw: string): HistoryEntry | undefined {
    const [e] = cjson.decode(raw);
    if (e === undefined || type(e) !== "table") return undefined;
    const entry = e as HistoryEntry;
    entry.seq = seq;
    return entry;
}

/**
 * The newest `limit` entries, newest first; only those of upstream `name` (lowercase) when given.
 * O(history_size) at most.
 */
export function listHistory(limit: number, name?: string): HistoryEntry[] {
    const [newest, oldest] = window();
    const out: HistoryEntry[] = [];
    const needle = name !== undefined ? `"upstream":"${name}"` : undefined;
    for (let s = newest; s >= oldest && out.length < limit; s--) {
        const raw = readEntry(s);
        // a body is JSON-escaped ("upstream":"x" in it reads \"upstream\":\"x\"): the plain find is exact
        if (raw !== undefined && (needle === undefined || string.find(raw, needle, 1, true)[0] !== undefined)) {
            const e = decodeEntry(s, raw);
            if (e !== undefined && (name === undefined || e.upstream === name)) out[out.length] = e;
        }
    }
    return out;
}

/**
 * The body upstream `name` (lowercase) had at revision `rev`: the current record when it is at rev, else
 * the history's update entry that produced rev. [body] or [undefined, reason, status]: 404 when the history
 * does not hold that revision (never written, or fallen out of the window), 410 when its body was not kept.
 */
export function bodyAt(name: string, rev: number): LuaMultiReturn<[string, undefined, undefined] | [undefined, string, number]> {
    const cur = readRecord(name);
    if (cur !== undefined && cur.rev === rev) return $multi(cur.body, undefined, undefined);
    const [newest, oldest] = window();
    const needle = `"upstream":"${name}"`;
    for (let s = newest; s >= oldest; s--) {
        const raw = readEntry(s);
        if (raw !== undefined && string.find(raw, needle, 1, true)[0] !== undefined) {
            const e = decodeEntry(s, raw);
            if (e !== undefined && e.upstream === name && e.rev_after === rev && e.op === "update") {
                if (e.body === undefined) return $multi(undefined, `the body of revision ${rev} of upstream "${name}" was not kept: ${e.body_omitted ?? "unknown"}`, 410);
                return $multi(e.body, undefined, undefined);
            }
        }
    }
    return $multi(undefined, `no revision ${rev} of upstream "${name}" in the history (it keeps the last ${getOptions().history_size} writes since the last restart)`, 404);
}

/** GET /status `history`: the option, entries and bytes kept, the budget, writes not recorded (lost), bodies cut. */
export function historyStatus(): unknown {
    const st = historyStats();
    return { history_size: getOptions().history_size, kept: st.kept, bytes: st.bytes, budget: st.budget, lost: st.lost, cut: st.cut };
}
