/** @noSelfInFile */
// The command log in the shared dict: the one place that writes upstream state (keys: store/keys.ts).
//
// A write (any worker, or the master in init): take the write lease (an exclusive lock), finish a change a
// killed writer left half-done, check limits and the optional expected revision, write c:<v+1> (the name),
// then u:<name> (the full record), then incr v, then drop c:<v+1-LOG_KEEP>. Readers never lock: a reader
// that sees version V can read c:1..V, and for each name the current u:<name>. It may see a u:<name> newer
// than V (written before v was incremented): harmless, since applying "the current state of NAME" is
// idempotent and later entries only re-apply it.
// Writes that cannot complete (full dict) undo what they wrote, so no reader ever sees a partial change:
// refused atomically, every worker keeps the same state.
// A writer killed (SIGKILL) inside its critical section: its lease is taken over at once (store/lease.ts),
// and the next writer completes or rolls back its change before its own (recover()).
// Phases: writes from content/timer (may sleep while waiting for the lock), init/init_worker (spin, no
// sleep); reads from any phase (balancer included: shm gets and JSON decoding only, no yields).
import * as cjson from "cjson.safe";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { canYield } from "../phase";
import { dict } from "./dict";
import { COUNT, CMD_PREFIX, LOG_KEEP, UPSTREAM_PREFIX, VERSION, WRITE_LEASE } from "./keys";
import { acquire, release } from "./lease";

/**
 * A commit's outcome: a StatusResult with one more value on success, the revision the upstream had before
 * (0: it did not exist; the audit line's rev_before).
 */
export type Committed = LuaMultiReturn<[number, undefined, undefined, number] | [undefined, string, number, undefined]>;

/**
 * A check run under the write lease with the current raw record (undefined: absent): returns [reason, status]
 * to refuse the write, or nothing. Cluster mode uses it (store/cluster.ts).
 */
export type CommitGuard = (this: void, oldRaw: string | undefined) => LuaMultiReturn<[string, number] | [undefined, undefined]>;

/** Waits for the write lease: true, or "busy" (trylock, or lock_timeout passed). */
function lock(): boolean {
    const o = getOptions();
    const ttl = math.max(o.lock_timeout, 1) + 2;
    if (acquire(WRITE_LEASE, ttl)) return true;
    if (o.trylock) return false;
    const yieldable = canYield();
    const deadline = ngx.now() + o.lock_timeout;
    let wait = 0.001;
    let spins = 0;
    for (;;) {
        if (yieldable) {
            ngx.sleep(wait);
            if (wait < 0.02) wait = wait * 2;
        } else {
            // init/init_worker: no sleeping; lock holders finish in microseconds, so spin a bounded while.
            spins = spins + 1;
            if (spins > 1000000) return false;
        }
        if (acquire(WRITE_LEASE, ttl)) return true;
        if (yieldable) {
            ngx.update_time();
            if (ngx.now() >= deadline) return false;
        }
    }
}

/** the last committed version (0 before any write) */
export function currentVersion(): number {
    const [v] = dict().get(VERSION);
    return (v as number | undefined) ?? 0;
}

/** How many upstreams exist (kept by the writers). */
export function upstreamCount(): number {
    const [n] = dict().get(COUNT);
    return (n as number | undefined) ?? 0;
}

/** The current record of NAME as stored (JSON), or undefined. */
export function readRaw(name: string): string | undefined {
    const [raw] = dict().get(UPSTREAM_PREFIX + name);
    return raw as string | undefined;
}

/** Decodes a stored record, or undefined (undecodable: logged). */
export function decodeRecord(name: string, raw: string): UpstreamRecord | undefined {
    const [rec, err] = cjson.decode(raw);
    if (rec === undefined || type(rec) !== "table") {
        ngx.log(ngx.ERR, "dyups: corrupt state of upstream ", name, ": ", err);
        return undefined;
    }
    return rec as UpstreamRecord;
}

/** The current record of NAME, or undefined (deleted / never existed, or undecodable: logged). */
export function readRecord(name: string): UpstreamRecord | undefined {
    const raw = readRaw(name);
    return raw === undefined ? undefined : decodeRecord(name, raw);
}

/**
 * Names changed by versions from+1..to, in order (duplicates possible), or undefined when part of that
 * range was compacted away (the reader must rebuild from allNames()).
 */
export function changedSince(from: number, to: number): string[] | undefined {
    if (to - from > LOG_KEEP) return undefined;
    const d = dict();
    const out: string[] = [];
    let n = 0;
    for (let v = from + 1; v <= to; v++) {
        const [name] = d.get(CMD_PREFIX + v);
        if (name === undefined) return undefined;
        n = n + 1;
        out[n - 1] = name as string;
    }
    return out;
}

/** Every upstream name in the dict, in no order. O(keys in the dict): for rebuilds and the state file. */
export function allNames(): string[] {
    const keys = dict().get_keys(0);
    const out: string[] = [];
    let n = 0;
    const plen = UPSTREAM_PREFIX.length;
    for (const [, k] of ipairs(keys)) {
        if (string.sub(k, 1, plen) === UPSTREAM_PREFIX) {
            n = n + 1;
            out[n - 1] = string.sub(k, plen + 1);
        }
    }
    return out;
}

function full(err: string | undefined): string {
    return err === "no memory"
        ? `shared dict "${getOptions().dict}" is full (no memory); nothing was changed`
        : `shared dict write failed: ${err}`;
}

/**
 * A writer killed between writing c:<v+1> and incrementing v left a change half-done. Its record write is
 * either done (u:<name> at revision v+1, or gone for a delete) or not: publish the first, drop the entry
 * of the second. Then every worker sees the same state as the store. Called under the write lease.
 */
function recover(d: NgxSharedDict): void {
    const [v0] = d.get(VERSION);
    const nv = ((v0 as number | undefined) ?? 0) + 1;
    const [name] = d.get(CMD_PREFIX + nv);
    if (name === undefined) return;
    const [raw] = d.get(UPSTREAM_PREFIX + (name as string));
    let done = raw === undefined;
    if (!done) {
        const [rec] = cjson.decode(raw as string);
        done = rec !== undefined && type(rec) === "table" && (rec as UpstreamRecord).rev === nv;
    }
    if (done) {
        d.incr(VERSION, 1, 0);
        ngx.log(ngx.WARN, "dyups: completed the change of upstream ", name, " (version ", nv, ") that a killed writer left unpublished");
    } else {
        d.delete(CMD_PREFIX + nv);
        ngx.log(ngx.WARN, "dyups: dropped the unfinished change of upstream ", name, " (version ", nv, ") of a killed writer");
    }
    recount(d);
}

/** Recounts u:* (a killed writer may have left n off by one). O(keys). */
function recount(d: NgxSharedDict): void {
    d.set(COUNT, allNames().length);
}

/**
 * Commits the new state of one upstream: `rec` (set or replace) or undefined (delete). `expectRev`
 * (optional) makes the write conditional on the upstream's current revision (0 = must not exist).
 * `guard` (optional) runs under the lease first (cluster mode).
 * Returns the new version, or [undefined, reason, status]: 404 (delete of an unknown upstream),
 * 409 (lock busy: reason "wait and try again\n"), 412 (revision mismatch), 429 (max_upstreams reached),
 * 507 (dict full), 500.
 */
export function commit(name: string, rec: UpstreamRecord | undefined, expectRev?: number, guard?: CommitGuard): Committed {
    if (!lock()) return $multi(undefined, "wait and try again\n", 409, undefined);
    const d = dict();
    recover(d);
    const [result, reason, status, before] = commitLocked(d, name, rec, expectRev, guard);
    release(WRITE_LEASE);
    return $multi(result, reason, status, before) as Committed;
}

/**
 * The revision of a stored record without decoding it: the top-level "rev" key. A string value cannot
 * contain `"rev":` (cjson escapes its quotes), so the first match is the key.
 */
function storedRevision(raw: string): number {
    const [digits] = string.match(raw, '"rev":(%d+)');
    return digits !== undefined ? (tonumber(digits) as number) : 0;
}

function commitLocked(d: NgxSharedDict, name: string, rec: UpstreamRecord | undefined, expectRev: number | undefined,
    guard: CommitGuard | undefined): Committed {
    const ukey = UPSTREAM_PREFIX + name;
    const [oldRaw, oldFlags] = d.get(ukey);
    const exists = oldRaw !== undefined;
    if (guard !== undefined) {
        const [greason, gstatus] = guard(oldRaw as string | undefined);
        if (greason !== undefined) return $multi(undefined, greason, gstatus as number, undefined);
    }
    const rev = exists ? storedRevision(oldRaw as string) : 0;
    if (expectRev !== undefined && rev !== expectRev) {
        return $multi(undefined, `revision mismatch: upstream is at revision ${rev}`, 412, undefined);
    }
    if (rec === undefined && !exists) return $multi(undefined, "not found uptream", 404, undefined);
    const max = getOptions().max_upstreams;
    if (rec !== undefined && !exists && upstreamCount() >= max) {
        return $multi(undefined, `too many upstreams (max_upstreams is ${max})`, 429, undefined);
    }
    const [v0] = d.get(VERSION);
    const nv = ((v0 as number | undefined) ?? 0) + 1;
    const ckey = CMD_PREFIX + nv;
    let encoded: string | undefined;
    // the creation version rides in the entry's flags: listings keep creation order across replaces
    const created = exists ? ((oldFlags as number | undefined) ?? 0) : nv;
    if (rec !== undefined) {
        rec.rev = nv;
        rec.created = created;
        const [enc, eerr] = cjson.encode(rec);
        if (enc === undefined) return $multi(undefined, `cannot encode the upstream: ${eerr}`, 500, undefined);
        encoded = enc;
    }
    // 1. the log entry
    const [okc, errc] = d.safe_set(ckey, name);
    if (!okc) return $multi(undefined, full(errc), errc === "no memory" ? 507 : 500, undefined);
    // 2. the state (undo 1 if it cannot be written)
    if (encoded !== undefined) {
        const [oku, erru] = d.safe_set(ukey, encoded, 0, created);
        if (!oku) {
            d.delete(ckey);
            return $multi(undefined, full(erru), erru === "no memory" ? 507 : 500, undefined);
        }
        if (!exists) d.incr(COUNT, 1, 0);
    } else {
        d.delete(ukey);
        d.incr(COUNT, -1, 1);
    }
    // 3. publish: from here every reader that checks the version sees the change
    const [v] = d.incr(VERSION, 1, 0);
    // 4. compaction: the log keeps LOG_KEEP entries; readers further behind rebuild from u:*
    if (nv > LOG_KEEP) d.delete(CMD_PREFIX + (nv - LOG_KEEP));
    return $multi(v ?? nv, undefined, undefined, rev);
}

/** Space left in the dict (bytes, approximate: free pages only). */
export function freeSpace(): number {
    return dict().free_space();
}

/**
 * Every upstream name in creation order (first created first; a replace keeps its place). O(n log n).
 * `display`: each name as its latest POST spelled it (the record's display field), for listings; the
 * default is the stored (lowercase) name, the key of every other operation.
 */
export function namesInOrder(display?: boolean): string[] {
    const d = dict();
    const names = allNames();
    const order: LuaTable<string, number> = new LuaTable();
    const shown: LuaTable<string, string> = new LuaTable();
    for (const [, name] of ipairs(names)) {
        const [raw, flags] = d.get(UPSTREAM_PREFIX + name);
        order.set(name, (flags as number | undefined) ?? 0);
        if (display === true && raw !== undefined) {
            // like storedRevision: names are [A-Za-z0-9._-], never escaped
            const [shownAs] = string.match(raw as string, '"display":"([%w._-]+)"');
            if (shownAs !== undefined) shown.set(name, shownAs);
        }
    }
    table.sort(names, (a: string, b: string) => {
        const oa = order.get(a) ?? 0;
        const ob = order.get(b) ?? 0;
        return oa === ob ? a < b : oa < ob;
    });
    if (display === true) {
        for (const [i, name] of ipairs(names)) {
            const shownAs = shown.get(name);
            if (shownAs !== undefined) names[i - 1] = shownAs;
        }
    }
    return names;
}
