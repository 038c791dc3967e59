/** @noSelfInFile */
// Cluster mode's shared-dict state (key families in store/keys.ts): the commit guard that keeps every local
// upstream moving forward in etcd revisions, the deletion tombstones it needs, the watcher's position and
// what /status shows.
//
// The guard (etcdGuard) runs inside the command log's writers' lock (store/command_log.commit), so "is
// this etcd revision newer than what this node has for NAME?" and the write itself are one atomic step
// for every worker: a writer applying its own write and the watcher applying a watch event can never put
// an older revision over a newer one, whichever runs first. For a name that is absent here, the
// comparison is with its tombstone (the etcd revision it was deleted at), written by the same guard.
// Phases: the guard runs wherever commit runs (content, timer); the rest are plain shm reads and writes.
import * as cjson from "cjson.safe";
import { UpstreamRecord } from "../model";
import { CommitGuard } from "./command_log";
import { dict } from "./dict";
import {
    CLUSTER_APPLIED, CLUSTER_COUNT, CLUSTER_ETCD_REV, CLUSTER_ID, CLUSTER_INFO, CLUSTER_TOMB_PREFIX, CLUSTER_TOMB_TTL, CLUSTER_WRITE_ERROR,
} from "./keys";

/** The status a guard refuses an old revision with (the caller treats it as "already applied"). */
export const STALE = 304;

/** The etcd revision of a stored record (0: none, e.g. a record from before cluster mode). */
export function etcdRevisionOf(raw: string | undefined): number {
    if (raw === undefined) return 0;
    const [rec] = cjson.decode(raw);
    if (rec === undefined || type(rec) !== "table") return 0;
    const e = (rec as UpstreamRecord).etcd;
    return type(e) === "number" ? (e as number) : 0;
}

/** The etcd revision this node is at for NAME: its record's, else its tombstone's, else 0. */
export function localRevision(name: string, raw: string | undefined): number {
    if (raw !== undefined) return etcdRevisionOf(raw);
    const [t] = dict().get(CLUSTER_TOMB_PREFIX + name);
    return (t as number | undefined) ?? 0;
}

/**
 * The guard for applying etcd revision `rev` of NAME (a put, or a delete when `isDelete`): refuses with
 * STALE when this node already holds that revision or a newer one; for a delete, records the tombstone.
 * `force`: etcd's revisions went back (restored from a backup, or another cluster): apply whatever this node
 * holds. Never raises (it runs under the writers' lock).
 */
export function etcdGuard(name: string, rev: number, isDelete: boolean, force?: boolean): CommitGuard {
    return (oldRaw: string | undefined) => {
        const cur = localRevision(name, oldRaw);
        if (cur >= rev && force !== true) return $multi(`already at etcd revision ${cur}`, STALE);
        if (isDelete) dict().safe_set(CLUSTER_TOMB_PREFIX + name, rev, CLUSTER_TOMB_TTL);
        return $multi(undefined, undefined);
    };
}

/** The etcd revision up to which this node applied every change (0 before the first read). */
export function appliedRevision(): number {
    return (dict().get(CLUSTER_APPLIED)[0] as number | undefined) ?? 0;
}

export function setAppliedRevision(rev: number): void {
    dict().safe_set(CLUSTER_APPLIED, rev);
}

/** The highest etcd revision seen by any worker of this node. */
export function seenRevision(): number {
    return (dict().get(CLUSTER_ETCD_REV)[0] as number | undefined) ?? 0;
}

/** Raises the seen revision to `rev` (races between workers can only lose a value that another raised past). */
export function noteRevision(rev: number | undefined): void {
    if (rev === undefined || rev <= 0) return;
    const d = dict();
    const [cur] = d.get(CLUSTER_ETCD_REV);
    if (cur === undefined || (cur as number) < rev) d.safe_set(CLUSTER_ETCD_REV, rev);
}

/** The id of the etcd cluster this node follows (from its last full read), or undefined. */
export function clusterId(): string | undefined {
    return dict().get(CLUSTER_ID)[0] as string | undefined;
}

export function setClusterId(id: string): void {
    if (id !== "") dict().safe_set(CLUSTER_ID, id);
}

/** Sets the seen revision back (etcd's revisions went back: see the watcher's full read). */
export function resetSeenRevision(rev: number): void {
    dict().safe_set(CLUSTER_ETCD_REV, rev);
}

export function setEtcdCount(n: number): void {
    dict().safe_set(CLUSTER_COUNT, n);
}

export function etcdCount(): number | undefined {
    return dict().get(CLUSTER_COUNT)[0] as number | undefined;
}

/** The watcher's state, as /status shows it. */
export interface WatcherInfo {
    state: string;
    pid: number;
    endpoint?: string;
    since: number;
    last_event_at?: number;
    full_reads: number;
    events: number;
    last_error?: string;
    last_error_at?: number;
    /** upstreams etcd holds that this node could not apply (name -> reason) */
    rejected?: LuaTable<string, string>;
}

export function saveWatcherInfo(info: WatcherInfo): void {
    const [enc] = cjson.encode(info);
    if (enc !== undefined) dict().safe_set(CLUSTER_INFO, enc);
}

export function watcherInfo(): WatcherInfo | undefined {
    const [raw] = dict().get(CLUSTER_INFO);
    if (raw === undefined) return undefined;
    const [t] = cjson.decode(raw as string);
    return t === undefined ? undefined : (t as WatcherInfo);
}

export function noteWriteError(err: string): void {
    const [enc] = cjson.encode({ error: err, at: ngx.now() });
    if (enc !== undefined) dict().safe_set(CLUSTER_WRITE_ERROR, enc);
}

export function lastWriteError(): { error: string; at: number } | undefined {
    const [raw] = dict().get(CLUSTER_WRITE_ERROR);
    if (raw === undefined) return undefined;
    const [t] = cjson.decode(raw as string);
    return t === undefined ? undefined : (t as { error: string; at: number });
}
