/** @noSelfInFile */
// The command log in the shared dict: the one place that writes upstream state (see store/keys.ts).
//
// A write (any worker, or the master in init): take the writers' lock, check limits and the optional
// expected revision, write u:<name> (the full record) and c:<v+1> (the name), then incr v, then drop
// c:<v+1-LOG_KEEP>. Readers never lock: a reader that sees version V can read c:1..V, and for each name the
// current u:<name>. It may see a u:<name> newer than V (written before v was incremented): harmless, since
// applying "the current state of NAME" is idempotent and later entries only re-apply it.
// Writes that cannot complete (full dict) undo what they wrote, so no reader ever sees a partial change:
// refused atomically, every worker keeps the same state.
// Phases: writes from content/timer (may sleep while waiting for the lock), init/init_worker (spin, no
// sleep); reads from any phase (balancer included: shm gets and JSON decoding only, no yields).
import * as cjson from "cjson.safe";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { COUNT, CMD_PREFIX, LOCK, LOG_KEEP, UPSTREAM_PREFIX, VERSION } from "./keys";
import { shm } from "./shm";

/** A write's outcome: the new version, or a reason with the HTTP status that fits it. */
export type WriteResult = LuaMultiReturn<[number, undefined, undefined] | [undefined, string, number]>;

/**
 * A check run under the writers' lock with the current raw record (undefined: absent): returns
 * [reason, status] to refuse the write, or nothing. Cluster mode uses it (store/cluster.ts).
 */
export type CommitGuard = (this: void, oldRaw: string | undefined) => LuaMultiReturn<[string, number] | [undefined, undefined]>;

const YIELDABLE: LuaTable<string, boolean> = new LuaTable();
YIELDABLE.set("rewrite", true);
YIELDABLE.set("access", true);
YIELDABLE.set("content", true);
YIELDABLE.set("timer", true);
YIELDABLE.set("ssl_cert", true);
YIELDABLE.set("ssl_session_fetch", true);

/** true when this phase may yield (sleep, cosockets) */
export function canYield(): boolean {
    return YIELDABLE.get(ngx.get_phase()) === true;
}

function lock(dict: NgxSharedDict): LuaMultiReturn<[true, undefined] | [undefined, string]> {
    const o = getOptions();
    const pid = ngx.worker.pid();
    const [ok, err] = dict.add(LOCK, pid, math.max(o.lock_timeout, 1) + 2);
    if (ok) return $multi(true, undefined);
    if (err !== "exists") return $multi(undefined, `cannot take the write lock: ${err}`);
    if (o.trylock) return $multi(undefined, "busy");
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
            if (spins > 1000000) return $multi(undefined, "busy");
        }
        const [ok2, err2] = dict.add(LOCK, pid, math.max(o.lock_timeout, 1) + 2);
        if (ok2) return $multi(true, undefined);
        if (err2 !== "exists") return $multi(undefined, `cannot take the write lock: ${err2}`);
        if (yieldable) {
            ngx.update_time();
            if (ngx.now() >= deadline) return $multi(undefined, "busy");
        }
    }
}

function unlock(dict: NgxSharedDict): void {
    // The lock's TTL exceeds lock_timeout, so it is ours unless we held it far longer than any write takes.
    if (dict.get(LOCK)[0] === ngx.worker.pid()) dict.delete(LOCK);
}

/** the last committed version (0 before any write) */
export function currentVersion(): number {
    const [v] = shm().get(VERSION);
    return (v as number | undefined) ?? 0;
}

/** The current record of NAME as stored (JSON), or undefined. */
export function readRaw(name: string): string | undefined {
    const [raw] = shm().get(UPSTREAM_PREFIX + name);
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
    const dict = shm();
    const out: string[] = [];
    let n = 0;
    for (let v = from + 1; v <= to; v++) {
        const [name] = dict.get(CMD_PREFIX + v);
        if (name === undefined) return undefined;
        n = n + 1;
        (out as unknown as LuaTable<number, string>).set(n, name as string);
    }
    return out;
}

/** Every upstream name in the dict, in no order. O(keys in the dict): for rebuilds and the state file. */
export function allNames(): string[] {
    const keys = shm().get_keys(0);
    const out: string[] = [];
    let n = 0;
    const plen = UPSTREAM_PREFIX.length;
    for (const [, k] of ipairs(keys)) {
        if (string.sub(k, 1, plen) === UPSTREAM_PREFIX) {
            n = n + 1;
            (out as unknown as LuaTable<number, string>).set(n, string.sub(k, plen + 1));
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
 * Commits the new state of one upstream: `rec` (set or replace) or undefined (delete). `expectRev`
 * (optional) makes the write conditional on the upstream's current revision (0 = must not exist).
 * Returns the new version, or [undefined, reason, status]: 404 (delete of an unknown upstream),
 * 409 (lock busy), 412 (revision mismatch), 429 (max_upstreams reached), 507 (dict full), 500.
 */
export function commit(name: string, rec: UpstreamRecord | undefined, expectRev?: number, guard?: CommitGuard): WriteResult {
    const dict = shm();
    const [locked, lerr] = lock(dict);
    if (!locked) {
        if (lerr === "busy") return $multi(undefined, "wait and try again\n", 409);
        return $multi(undefined, lerr, 500);
    }
    const [result, reason, status] = commitLocked(dict, name, rec, expectRev, guard);
    unlock(dict);
    return $multi(result, reason, status) as WriteResult;
}

function commitLocked(dict: NgxSharedDict, name: string, rec: UpstreamRecord | undefined, expectRev?: number, guard?: CommitGuard): WriteResult {
    const ukey = UPSTREAM_PREFIX + name;
    const [oldRaw, oldFlags] = dict.get(ukey);
    const exists = oldRaw !== undefined;
    if (guard !== undefined) {
        const [greason, gstatus] = guard(oldRaw as string | undefined);
        if (greason !== undefined) return $multi(undefined, greason, gstatus as number);
    }
    if (expectRev !== undefined) {
        let rev = 0;
        if (exists) {
            const [old] = cjson.decode(oldRaw as string);
            rev = old !== undefined ? ((old as UpstreamRecord).rev ?? 0) : 0;
        }
        if (rev !== expectRev) return $multi(undefined, `revision mismatch: upstream is at revision ${rev}`, 412);
    }
    if (rec === undefined && !exists) return $multi(undefined, "not found uptream", 404);
    const [count] = dict.get(COUNT);
    if (rec !== undefined && !exists && ((count as number | undefined) ?? 0) >= getOptions().max_upstreams) {
        return $multi(undefined, `too many upstreams (max_upstreams is ${getOptions().max_upstreams})`, 429);
    }
    const [v0] = dict.get(VERSION);
    const nv = ((v0 as number | undefined) ?? 0) + 1;
    const ckey = CMD_PREFIX + nv;
    let encoded: string | undefined;
    // the creation version rides in the entry's flags: listings keep creation order across replaces
    const created = exists ? ((oldFlags as number | undefined) ?? 0) : nv;
    if (rec !== undefined) {
        rec.rev = nv;
        rec.created = created;
        const [enc, eerr] = cjson.encode(rec);
        if (enc === undefined) return $multi(undefined, `cannot encode the upstream: ${eerr}`, 500);
        encoded = enc;
    }
    // 1. the log entry
    const [okc, errc] = dict.safe_set(ckey, name);
    if (!okc) return $multi(undefined, full(errc), errc === "no memory" ? 507 : 500);
    // 2. the state (undo 1 if it cannot be written)
    if (encoded !== undefined) {
        const [oku, erru] = dict.safe_set(ukey, encoded, 0, created);
        if (!oku) {
            dict.delete(ckey);
            return $multi(undefined, full(erru), erru === "no memory" ? 507 : 500);
        }
        if (!exists) dict.incr(COUNT, 1, 0);
    } else {
        dict.delete(ukey);
        dict.incr(COUNT, -1, 1);
    }
    // 3. publish: from here every reader that checks the version sees the change
    const [v] = dict.incr(VERSION, 1, 0);
    // 4. compaction: the log keeps LOG_KEEP entries; readers further behind rebuild from u:*
    if (nv > LOG_KEEP) dict.delete(CMD_PREFIX + (nv - LOG_KEEP));
    return $multi(v ?? nv, undefined, undefined);
}

/** Space left in the dict (bytes, approximate: free pages only). */
export function freeSpace(): number {
    return shm().free_space();
}

/** Every upstream name in creation order (first created first; a replace keeps its place). O(n log n). */
export function namesInOrder(): string[] {
    const dict = shm();
    const names = allNames();
    const order: LuaTable<string, number> = new LuaTable();
    for (const [, name] of ipairs(names)) {
        const [, flags] = dict.get(UPSTREAM_PREFIX + name);
        order.set(name, (flags as number | undefined) ?? 0);
    }
    table.sort(names, (a: string, b: string) => {
        const oa = order.get(a) ?? 0;
        const ob = order.get(b) ?? 0;
        return oa === ob ? a < b : oa < ob;
    });
    return names;
}
