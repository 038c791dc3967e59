/** @noSelfInFile */
// The command log in the shared dict: the one place that writes upstream state (keys: store/keys.ts).
//
// A write (any worker, or the master in init): take the write lease (an exclusive lock), finish a change a
// killed writer left half-done, check the limits (max_upstreams: 429; the configuration budget: 507) and the
// optional expected revision, then: the journal j (in place), c:<v+1> (the name), the new record under a
// fresh key r:<name>@<v+1>, the pointer u:<name> (an 8-byte number: moved in place), delete the old record,
// the counters (n, dg, cb: in place), incr v, drop c:<v+1-LOG_KEEP>. Readers never lock: a reader that sees
// version V can read c:1..V, and for each name the record its pointer names. It may see a record newer than
// V (written before v was incremented): harmless, since applying "the current state of NAME" is idempotent
// and later entries only re-apply it. A reader that finds the pointer's record gone (deleted by a write that
// moved the pointer meanwhile) reads the pointer again.
//
// A full dict (safe_set/safe_add fail with "no memory"): nothing already stored is ever freed before the new
// value is in place, so a refused write leaves the old record, the log and every worker as they were (507).
// A delete needs no new memory: the lease comes out of the reserve if it must (rsv:*), the journal, the
// pointer and the counters are overwritten in place, a log entry that does not fit is left out (the journal
// names the newest version; a reader missing an older entry rebuilds). Accepted race: freeing a reserve key
// and adding the lease are two steps, and another worker's new key of the same slab class (a connection
// count) could take the freed chunk in between; the writer then waits and the next try frees the other key. A write that shrinks an upstream
// whose new record does not fit beside the old one overwrites the old record in place, padded to its length.
// A writer killed (SIGKILL) inside its critical section: its lease is taken over at once (store/lease.ts),
// and the next writer completes or rolls back its change before its own (recover(), from the journal).
// Phases: writes from content/timer (may sleep while waiting for the lock), init/init_worker (spin, no
// sleep); reads from any phase (balancer included: shm gets and JSON decoding only, no yields).
import * as cjson from "cjson.safe";
import { revisionHash } from "../digest";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { canYield } from "../phase";
import { budgetBytes, nodeBytes } from "./budget";
import { dict } from "./dict";
import {
    CLUSTER_DIGEST, CMD_PREFIX, CONFIG_BYTES, COUNT, DIGEST, HEALTH_GEN, JOURNAL, JOURNAL_LEN, LOG_KEEP, RECORD_PREFIX, RESERVE_KEYS,
    RESERVE_PREFIX, UPSTREAM_PREFIX, VERSION, WRITE_LEASE,
} from "./keys";
import { acquire, owner, release } from "./lease";

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

/** the record key of NAME's slot */
function recordKey(name: string, slot: number): string {
    return `${RECORD_PREFIX}${name}@${slot}`;
}

/** true when this worker freed a reserve key that is not back yet */
let reserveUsed = false;

/** tryLock's outcomes */
const TAKEN = 0;
const BUSY = 1;
const NO_MEMORY = 2;

/**
 * One attempt at the write lease: TAKEN, BUSY (another writer holds it), or NO_MEMORY (nobody holds it but it
 * cannot be added: the dict is full). Then it frees one reserve key (the lease's slab class) and tries again
 * in the chunk it freed.
 */
function tryLock(ttl: number): number {
    if (acquire(WRITE_LEASE, ttl)) return TAKEN;
    if (owner(WRITE_LEASE) !== undefined) return BUSY;
    const d = dict();
    for (let i = 1; i <= RESERVE_KEYS; i++) {
        const key = RESERVE_PREFIX + i;
        if (d.get(key)[0] !== undefined) {
            d.delete(key);
            reserveUsed = true;
            ngx.log(ngx.WARN, "dyups: shared dict \"", getOptions().dict, "\" is full: the write lease comes out of the reserve");
            if (acquire(WRITE_LEASE, ttl)) return TAKEN;
            break;
        }
    }
    return owner(WRITE_LEASE) !== undefined ? BUSY : NO_MEMORY;
}

/** Puts back the reserve keys this worker used (after the write freed memory, or later). */
function refillReserve(d: NgxSharedDict): void {
    if (!reserveUsed) return;
    let missing = false;
    for (let i = 1; i <= RESERVE_KEYS; i++) {
        const [ok, err] = d.safe_add(RESERVE_PREFIX + i, 0);
        if (!ok && err !== "exists") missing = true;
    }
    reserveUsed = missing;
}

/** Puts back reserve keys this worker used and could not put back after its write (the sync timer). */
export function topUpReserve(): void {
    if (reserveUsed) refillReserve(dict());
}

/** How many reserve keys there should be (GET /status). */
export function reserveExpected(): number {
    return RESERVE_KEYS;
}

/** How many reserve keys are in place (GET /status). */
export function reserveLeft(): number {
    const d = dict();
    let n = 0;
    for (let i = 1; i <= RESERVE_KEYS; i++) if (d.get(RESERVE_PREFIX + i)[0] !== undefined) n = n + 1;
    return n;
}

/**
 * Waits for the write lease: TAKEN, BUSY (trylock, or lock_timeout passed) or NO_MEMORY (the dict has no room
 * for the lease and the reserve is spent: waiting in a phase that cannot sleep would not free any).
 */
function lock(): number {
    const o = getOptions();
    const ttl = math.max(o.lock_timeout, 1) + 2;
    let r = tryLock(ttl);
    if (r === TAKEN || o.trylock) return r;
    const yieldable = canYield();
    if (!yieldable && r === NO_MEMORY) return r;
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
            if (spins > 1000000) return r;
        }
        r = tryLock(ttl);
        if (r === TAKEN || (!yieldable && r === NO_MEMORY)) return r;
        if (yieldable) {
            ngx.update_time();
            if (ngx.now() >= deadline) return r;
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

/**
 * The current record of NAME as stored (JSON), or undefined. Two gets: the pointer, then its record; if a
 * writer moved the pointer and deleted that record in between, the pointer is read again.
 */
export function readRaw(name: string): string | undefined {
    const d = dict();
    const ukey = UPSTREAM_PREFIX + name;
    let [ptr] = d.get(ukey);
    for (let i = 1; i <= 100; i++) {
        if (ptr === undefined) return undefined;
        if (type(ptr) === "string") return ptr as string; // the layout before pointers: the record itself
        const [raw] = d.get(recordKey(name, ptr as number));
        if (raw !== undefined) return raw as string;
        const [again] = d.get(ukey);
        if (again === ptr) {
            ngx.log(ngx.ALERT, "dyups: upstream ", name, " points to a missing record (slot ", ptr, ")");
            return undefined;
        }
        ptr = again;
    }
    return undefined;
}

// Reading a stored record without decoding it. Only the record's own keys can match these patterns: a string
// value cannot contain `"key":` (cjson escapes its quotes; the body is such a string), picker arguments are
// "k=v" strings, and `check` is an object only as spec.check (spec/store/command_log_spec.lua checks them
// against the decoded records).

/** The number a stored record holds under `pattern` ('"rev":(%d+)'), 0 when there is none. */
function storedNumber(raw: string, pattern: string): number {
    const [digits] = string.match(raw, pattern);
    return digits !== undefined ? (tonumber(digits) as number) : 0;
}

/** The revision of a stored record (its top-level "rev"). */
export function storedRevision(raw: string): number {
    return storedNumber(raw, '"rev":(%d+)');
}

/** The version that created the upstream (0: not stored). */
export function storedCreated(raw: string): number {
    return storedNumber(raw, '"created":(%d+)');
}

/** Texts of a stored record that has an active check (spec.check), a server given by a host name, maybe a display spelling. */
export const HAS_CHECK = '"check":{';
export const HAS_HOST_NAME = '"kind":"name"';
export const MAY_HAVE_DISPLAY = '"display":';

/** Whether a stored record's text contains `needle` (HAS_CHECK, HAS_HOST_NAME, MAY_HAVE_DISPLAY). */
export function storedHas(raw: string, needle: string): boolean {
    return string.find(raw, needle, 1, true)[0] !== undefined;
}

/**
 * NAME's stored record when its text contains `needle` (HAS_CHECK, HAS_HOST_NAME), decoded; undefined when there
 * is none or it lacks the needle. For followers that care only about records with that feature (the prober, the
 * DNS refresher): the others are not decoded, which a bulk change of thousands of upstreams would otherwise pay.
 */
export function readRecordWith(name: string, needle: string): UpstreamRecord | undefined {
    const raw = readRaw(name);
    if (raw === undefined || !storedHas(raw, needle)) return undefined;
    return decodeRecord(name, raw);
}

/** The etcd revision of a stored record (0: none). */
function storedEtcd(raw: string): number {
    return storedNumber(raw, '"etcd":(%d+)');
}

/** The cluster digest term of one record (cluster/status.ts). */
function etcdHash(name: string, etcd: number): number {
    return ngx.crc32_short(`${name}:${etcd}`);
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
        let [name] = d.get(CMD_PREFIX + v);
        // an entry left out by a commit into a full dict: the journal names the newest one
        if (name === undefined && v === to) name = journalName(v);
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

function fullStatus(err: string | undefined): number {
    return err === "no memory" ? 507 : 500;
}

/** Adds BY to the resident number KEY (created if missing: only before prepareStore, e.g. in specs). */
function bump(d: NgxSharedDict, key: string, by: number): void {
    const [x] = d.incr(key, by);
    if (x === undefined) d.safe_set(key, by);
}

/** Overwrites the journal in place: the change in progress (op "s" set, "d" delete; "-" none). */
function journal(d: NgxSharedDict, nv: number, op: string, oldSlot: number, name: string): void {
    const text = `${nv} ${op} ${oldSlot} ${name}`;
    d.safe_set(JOURNAL, text + string.rep(" ", JOURNAL_LEN - text.length));
}

interface JournalEntry {
    nv: number;
    op: string;
    oldSlot: number;
    name: string;
}

function readJournal(d: NgxSharedDict): JournalEntry | undefined {
    const [raw] = d.get(JOURNAL);
    if (raw === undefined || type(raw) !== "string") return undefined;
    const [nv, op, slot, name] = string.match(raw as string, "^(%d+) (%S) (%-?%d+) (%S+)");
    if (nv === undefined) return undefined;
    return { nv: tonumber(nv) as number, op, oldSlot: tonumber(slot) as number, name };
}

/**
 * The newest version's upstream name from the journal, when its log entry could not be written (a commit
 * into a full dict). Readers call it for a missing entry.
 */
function journalName(v: number): string | undefined {
    const j = readJournal(dict());
    return j !== undefined && j.nv === v && j.op !== "-" ? j.name : undefined;
}

/**
 * A writer killed between its journal entry and incrementing v left a change half-done. Its record write is
 * either done (NAME's pointer names a record at revision v+1, or the pointer is gone for a delete) or not:
 * publish the first (removing the old record it may have left), roll back the second (removing the new
 * record and the log entry it may have left). Then every worker sees the same state as the store, and the
 * counters are recomputed. Called under the write lease; O(1) unless there is something to recover.
 */
function recover(d: NgxSharedDict): void {
    const j = readJournal(d);
    if (j === undefined || j.op === "-") return;
    const [v0] = d.get(VERSION);
    const nv = ((v0 as number | undefined) ?? 0) + 1;
    if (j.nv !== nv) return;
    const name = j.name;
    const [ptr] = d.get(UPSTREAM_PREFIX + name);
    let done: boolean;
    if (j.op === "d") {
        done = ptr === undefined;
    } else {
        const raw = readRaw(name);
        done = raw !== undefined && storedRevision(raw) === nv;
    }
    if (done) {
        if (j.oldSlot > 0 && ptr !== j.oldSlot) d.delete(recordKey(name, j.oldSlot));
        d.incr(VERSION, 1, 0);
        ngx.log(ngx.WARN, "dyups: completed the change of upstream ", name, " (version ", nv, ") that a killed writer left unpublished");
    } else {
        if (ptr !== nv) d.delete(recordKey(name, nv));
        d.delete(CMD_PREFIX + nv);
        journal(d, nv, "-", 0, name);
        ngx.log(ngx.WARN, "dyups: dropped the unfinished change of upstream ", name, " (version ", nv, ") of a killed writer");
    }
    rescan(d);
}

export interface StoreTotals {
    upstreams: number;
    digest: number;
    clusterDigest: number;
    bytes: number;
}

/** Recomputes n, dg and cb from the keys (a killed writer may have left them off). O(keys). */
function rescan(d: NgxSharedDict): StoreTotals {
    const t = scan(d);
    d.safe_set(COUNT, t.upstreams);
    d.safe_set(DIGEST, t.digest);
    d.safe_set(CLUSTER_DIGEST, t.clusterDigest);
    d.safe_set(CONFIG_BYTES, t.bytes);
    return t;
}

/** n, dg and cb as the keys say. O(keys): specs compare it with the counters the writers keep. */
export function scan(d: NgxSharedDict): StoreTotals {
    const t: StoreTotals = { upstreams: 0, digest: 0, clusterDigest: 0, bytes: 0 };
    const ulen = UPSTREAM_PREFIX.length;
    for (const [, k] of ipairs(d.get_keys(0))) {
        const p = string.sub(k, 1, 2);
        if (p === UPSTREAM_PREFIX || p === RECORD_PREFIX || p === CMD_PREFIX) {
            const [val] = d.get(k);
            if (val !== undefined) {
                t.bytes = t.bytes + nodeBytes(k.length, type(val) === "string" ? (val as string).length : 8);
                if (p === UPSTREAM_PREFIX) {
                    const name = string.sub(k, ulen + 1);
                    const raw = readRaw(name);
                    t.upstreams = t.upstreams + 1;
                    if (raw !== undefined) {
                        t.digest = t.digest ^ revisionHash(name, storedRevision(raw));
                        t.clusterDigest = t.clusterDigest ^ etcdHash(name, storedEtcd(raw));
                    }
                }
            }
        }
    }
    return t;
}

/**
 * Makes the resident keys (store/keys.ts) exist, so that later writes to them are in place: called by init()
 * in the master, on a fresh dict (start) and a kept one (reload). Counters missing from a dict written by an
 * older build are recomputed.
 */
export function prepareStore(): void {
    const d = dict();
    const [n] = d.get(COUNT);
    const [dg] = d.get(DIGEST);
    const [cb] = d.get(CONFIG_BYTES);
    const [cdg] = d.get(CLUSTER_DIGEST);
    if (n === undefined || dg === undefined || cb === undefined || cdg === undefined) rescan(d);
    d.safe_add(VERSION, 0);
    // the health generation (store/peer_health.ts, store/health.ts) too: its incr then never allocates
    d.safe_add(HEALTH_GEN, 0);
    if (d.get(JOURNAL)[0] === undefined) journal(d, 0, "-", 0, "-");
    for (let i = 1; i <= RESERVE_KEYS; i++) d.safe_add(RESERVE_PREFIX + i, 0);
}

/**
 * Commits the new state of one upstream: `rec` (set or replace) or undefined (delete). `expectRev`
 * (optional) makes the write conditional on the upstream's current revision (0 = must not exist).
 * `guard` (optional) runs under the lease first, with the current record (cluster mode).
 * Returns the new version, or [undefined, reason, status]: 404 (delete of an unknown upstream),
 * 409 (lock busy: reason "wait and try again\n"), 412 (revision mismatch), 429 (max_upstreams reached),
 * 507 (the configuration budget or the dict is full; nothing was changed), 500; on success, also the
 * revision the upstream had before (0: new).
 */
export function commit(name: string, rec: UpstreamRecord | undefined, expectRev?: number, guard?: CommitGuard): Committed {
    const locked = lock();
    if (locked === NO_MEMORY) {
        return $multi(undefined, `shared dict "${getOptions().dict}" is full (no memory for the write lock); nothing was changed`, 507, undefined);
    }
    if (locked !== TAKEN) return $multi(undefined, "wait and try again\n", 409, undefined);
    const d = dict();
    recover(d);
    const [result, reason, status, before] = commitLocked(d, name, rec, expectRev, guard);
    if (result === undefined) {
        // a refused write may have written its journal entry: nothing is in progress
        const j = readJournal(d);
        if (j !== undefined && j.nv === currentVersion() + 1 && j.op !== "-") journal(d, j.nv, "-", 0, name);
    }
    release(WRITE_LEASE);
    refillReserve(d);
    return $multi(result, reason, status, before) as Committed;
}

function commitLocked(d: NgxSharedDict, name: string, rec: UpstreamRecord | undefined, expectRev: number | undefined,
    guard: CommitGuard | undefined): Committed {
    const ukey = UPSTREAM_PREFIX + name;
    const [ptr, oldFlags] = d.get(ukey);
    const exists = ptr !== undefined;
    // oldSlot: the old record's slot; -1 when the pointer key holds the record itself (older layout)
    let oldSlot = 0;
    let oldRaw: string | undefined;
    if (exists) {
        if (type(ptr) === "number") {
            oldSlot = ptr as number;
            oldRaw = d.get(recordKey(name, oldSlot))[0] as string | undefined;
        } else {
            oldSlot = -1;
            oldRaw = ptr as string;
        }
    }
    if (guard !== undefined) {
        const [greason, gstatus] = guard(oldRaw);
        if (greason !== undefined) return $multi(undefined, greason, gstatus as number, undefined);
    }
    const oldRev = oldRaw !== undefined ? storedRevision(oldRaw) : 0;
    if (expectRev !== undefined && oldRev !== expectRev) {
        return $multi(undefined, `revision mismatch: upstream is at revision ${oldRev}`, 412, undefined);
    }
    if (rec === undefined && !exists) return $multi(undefined, "not found uptream", 404, undefined);
    const max = getOptions().max_upstreams ?? 0;
    if (rec !== undefined && !exists && max > 0 && upstreamCount() >= max) {
        return $multi(undefined, `too many upstreams (max_upstreams is ${max}); nothing was changed`, 429, undefined);
    }
    const [v0] = d.get(VERSION);
    const nv = ((v0 as number | undefined) ?? 0) + 1;
    const ckey = CMD_PREFIX + nv;
    // the creation version rides in the pointer's flags: listings keep creation order across replaces
    const created = exists ? ((oldFlags as number | undefined) ?? 0) : nv;
    const oldBytes = oldRaw === undefined ? 0
        : oldSlot > 0 ? nodeBytes(recordKey(name, oldSlot).length, oldRaw.length) + nodeBytes(ukey.length, 8)
        : nodeBytes(ukey.length, oldRaw.length);
    let encoded: string | undefined;
    let newBytes = 0;
    const logBytes = nodeBytes(ckey.length, name.length);
    if (rec !== undefined) {
        rec.rev = nv;
        rec.created = created;
        const [enc, eerr] = cjson.encode(rec);
        if (enc === undefined) return $multi(undefined, `cannot encode the upstream: ${eerr}`, 500, undefined);
        encoded = enc;
        newBytes = nodeBytes(recordKey(name, nv).length, enc.length) + nodeBytes(ukey.length, 8);
        // the budget, before anything is touched: a write that adds bytes must leave them inside it
        const [cb0] = d.get(CONFIG_BYTES);
        const used = (cb0 as number | undefined) ?? 0;
        const budget = budgetBytes();
        if (newBytes > oldBytes && used + newBytes + logBytes > budget) {
            return $multi(undefined, `shared dict "${getOptions().dict}" is full: this upstream needs ${newBytes} bytes of the `
                + `configuration budget, ${math.max(0, budget - used)} of ${budget} are left; nothing was changed`, 507, undefined);
        }
    }
    // 1. the journal (in place): what a killed writer's successor must finish or undo
    journal(d, nv, rec !== undefined ? "s" : "d", oldSlot, name);
    // 2. the log entry; in a full dict a delete or a shrinking write goes on without it (see journalName)
    const [okc, errc] = d.safe_set(ckey, name);
    if (!okc && (errc !== "no memory" || (rec !== undefined && newBytes > oldBytes))) {
        return $multi(undefined, full(errc), fullStatus(errc), undefined);
    }
    let bytes = okc ? logBytes : 0;
    let slot = nv;
    if (encoded !== undefined) {
        // 3. the new record, under a fresh key: if it does not fit, nothing stored was touched
        const [okr, errr] = d.safe_add(recordKey(name, nv), encoded);
        if (!okr) {
            if (errr === "no memory" && oldSlot > 0 && oldRaw !== undefined && encoded.length <= oldRaw.length) {
                // a shrinking write into a full dict: overwrite the old record in place (same length: no allocation)
                const [okp, errp] = d.safe_set(recordKey(name, oldSlot), encoded + string.rep(" ", oldRaw.length - encoded.length));
                if (!okp) {
                    if (okc) d.delete(ckey);
                    return $multi(undefined, full(errp), fullStatus(errp), undefined);
                }
                slot = oldSlot;
            } else {
                if (okc) d.delete(ckey);
                return $multi(undefined, full(errr), fullStatus(errr), undefined);
            }
        }
        // 4. the pointer: in place when it exists (a number over a number never allocates)
        if (oldSlot !== slot) {
            const [okp, errp] = exists ? d.safe_set(ukey, slot, 0, created) : d.safe_add(ukey, slot, 0, created);
            if (!okp && oldSlot === -1) {
                // the older layout: the record in the pointer key was freed by that failed write; put it back
                d.delete(recordKey(name, nv));
                d.safe_set(ukey, oldRaw as string, 0, created);
            }
            if (!okp) {
                if (slot === nv) d.delete(recordKey(name, nv));
                if (okc) d.delete(ckey);
                return $multi(undefined, full(errp), fullStatus(errp), undefined);
            }
        }
        // 5. the old record goes
        if (oldSlot > 0 && oldSlot !== slot) d.delete(recordKey(name, oldSlot));
        if (slot === nv) bytes = bytes + newBytes - oldBytes;
        if (!exists) bump(d, COUNT, 1);
    } else {
        d.delete(ukey);
        if (oldSlot > 0) d.delete(recordKey(name, oldSlot));
        bytes = bytes - oldBytes;
        bump(d, COUNT, -1);
    }
    // 6. the counters (in place)
    const [dg0] = d.get(DIGEST);
    let dg = (dg0 as number | undefined) ?? 0;
    if (exists) dg = dg ^ revisionHash(name, oldRev);
    if (rec !== undefined) dg = dg ^ revisionHash(name, nv);
    d.safe_set(DIGEST, dg);
    const [cdg0] = d.get(CLUSTER_DIGEST);
    let cdg = (cdg0 as number | undefined) ?? 0;
    if (exists && oldRaw !== undefined) cdg = cdg ^ etcdHash(name, storedEtcd(oldRaw));
    if (rec !== undefined) cdg = cdg ^ etcdHash(name, rec.etcd ?? 0);
    d.safe_set(CLUSTER_DIGEST, cdg);
    // 7. publish: from here every reader that checks the version sees the change
    const [v] = d.incr(VERSION, 1, 0);
    // 8. compaction: the log keeps LOG_KEEP entries; readers further behind rebuild from u:*
    if (nv > LOG_KEEP) {
        const okey = CMD_PREFIX + (nv - LOG_KEEP);
        const [oname] = d.get(okey);
        if (oname !== undefined) {
            d.delete(okey);
            bytes = bytes - nodeBytes(okey.length, (oname as string).length);
        }
    }
    bump(d, CONFIG_BYTES, bytes);
    return $multi(v ?? nv, undefined, undefined, oldRev);
}

/** The digest of the stored state (every caught-up worker's digest equals it). One shm get. */
export function storedDigest(): number {
    const [dg] = dict().get(DIGEST);
    return (dg as number | undefined) ?? 0;
}

/** The cluster digest of the stored state (cluster/status.ts). One shm get. */
export function storedClusterDigest(): number {
    const [cdg] = dict().get(CLUSTER_DIGEST);
    return (cdg as number | undefined) ?? 0;
}

/** The configuration bytes the writers count (the budget's use). One shm get. */
export function configBytes(): number {
    const [cb] = dict().get(CONFIG_BYTES);
    return (cb as number | undefined) ?? 0;
}

/** Space left in the dict (bytes, approximate: free pages only). */
export function freeSpace(): number {
    return dict().free_space();
}

/**
 * Every upstream name in creation order (first created first; a replace keeps its place). O(keys + n log n):
 * it lists the dict's keys; listings use the registry's order instead (registry/order.ts).
 * `display`: each name as its latest POST spelled it (the record's display field), for listings; the
 * default is the stored (lowercase) name, the key of every other operation.
 */
export function namesInOrder(display?: boolean): string[] {
    const d = dict();
    const names = allNames();
    const order: LuaTable<string, number> = new LuaTable();
    const shown: LuaTable<string, string> = new LuaTable();
    for (const [, name] of ipairs(names)) {
        const [, flags] = d.get(UPSTREAM_PREFIX + name);
        order.set(name, (flags as number | undefined) ?? 0);
        const raw = display === true ? readRaw(name) : undefined;
        if (raw !== undefined) {
            // like storedRevision: names are [A-Za-z0-9._-], never escaped
            const [shownAs] = string.match(raw, '"display":"([%w._-]+)"');
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
