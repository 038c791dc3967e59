/** @noSelfInFile */
// The write history's storage in the shared dict (keys h:* in store/keys.ts): a window of the last
// `history_size` entries (JSON text, encoded by history.ts), numbered by a sequence that only grows while the
// dict lives. The window also holds at most its share of the dict (an eighth, store/budget.ts, counted in slab
// bytes), which the configuration budget leaves out, so history never takes the room configuration writes
// were promised: the oldest entries go first.
//
// Writers: every accepted write appends one entry after its commit (history.ts, from the audit hook), in the
// writer's phase (content, timer, init). Appends take the lease `history` (store/lease.ts), a lock held for a
// few shm operations; a writer that cannot get it within a second gives up. Entries are written with
// safe_set: a full dict evicts the oldest history entries (ours), never configuration; when even that is not
// enough the entry is not recorded. A failed append never fails the write: it is counted in h:lost (/status).
// Readers (GET /history, rollback) take no lock: they read h:seq and h:first and then the entries, and skip
// an entry that an append evicted meanwhile.
// Cost: an append is O(1) shm operations (plus one per evicted entry); a listing is O(window).
import type { Result } from "../errors";
import { canYield } from "../phase";
import { historyShareBytes, nodeBytes } from "./budget";
import { dict } from "./dict";
import { HISTORY_BYTES, HISTORY_CUT, HISTORY_FIRST, HISTORY_LEASE, HISTORY_LOST, HISTORY_PREFIX, HISTORY_SEQ } from "./keys";
import { acquire, release } from "./lease";

/** Bytes the history may hold in the dict: its share (store/budget.ts). */
export function budget(): number {
    return historyShareBytes(dict().capacity());
}

/** The slab bytes entry seq with a value of len bytes takes. */
function entryBytes(seq: number, len: number): number {
    return nodeBytes((HISTORY_PREFIX + seq).length, len);
}

function num(d: NgxSharedDict, key: string, dflt: number): number {
    const [v] = d.get(key);
    return type(v) === "number" ? (v as number) : dflt;
}

/** Waits for the history lock: up to a second (sleeping where the phase allows, else a bounded spin). */
function lock(): boolean {
    if (acquire(HISTORY_LEASE, 2)) return true;
    const yieldable = canYield();
    for (let i = 1; i <= (yieldable ? 200 : 100000); i++) {
        if (yieldable) ngx.sleep(0.005);
        if (acquire(HISTORY_LEASE, 2)) return true;
    }
    return false;
}

/** Deletes entry seq; returns the bytes it took. */
function evict(d: NgxSharedDict, seq: number): number {
    const key = HISTORY_PREFIX + seq;
    const [v] = d.get(key);
    d.delete(key);
    return type(v) === "string" ? entryBytes(seq, (v as string).length) : 0;
}

/** Counts a write that was not recorded (h:lost). */
export function countLost(): void {
    dict().incr(HISTORY_LOST, 1, 0);
}

/** Counts an entry recorded without its body (h:cut). */
export function countCut(): void {
    dict().incr(HISTORY_CUT, 1, 0);
}

/**
 * Appends one entry (JSON text) and keeps the window within `size` entries and the byte budget. Returns its
 * sequence number, or [undefined, reason] (counted in h:lost). `size` 0: nothing is recorded ([0]).
 */
export function append(json: string, size: number): Result<number> {
    if (size <= 0) return $multi(0, undefined);
    if (!lock()) {
        countLost();
        return $multi(undefined, "the history lock is busy");
    }
    const d = dict();
    const limit = budget();
    const seq = num(d, HISTORY_SEQ, 0);
    let first = num(d, HISTORY_FIRST, 1);
    let bytes = num(d, HISTORY_BYTES, 0);
    const len = entryBytes(seq + 1, json.length);
    while (first <= seq && (seq - first + 1 >= size || bytes + len > limit)) {
        bytes = bytes - evict(d, first);
        first = first + 1;
    }
    const key = HISTORY_PREFIX + (seq + 1);
    let [ok, err] = d.safe_set(key, json);
    while (!ok && err === "no memory" && first <= seq) {
        bytes = bytes - evict(d, first);
        first = first + 1;
        [ok, err] = d.safe_set(key, json);
    }
    if (ok) {
        bytes = bytes + len;
        d.safe_set(HISTORY_SEQ, seq + 1);
    }
    d.safe_set(HISTORY_FIRST, first);
    d.safe_set(HISTORY_BYTES, math.max(0, bytes));
    release(HISTORY_LEASE);
    if (!ok) {
        countLost();
        return $multi(undefined, `cannot store the history entry: ${err}`);
    }
    return $multi(seq + 1, undefined);
}

/** The window: [newest seq, oldest seq]; empty when newest < oldest. */
export function window(): LuaMultiReturn<[number, number]> {
    const d = dict();
    return $multi(num(d, HISTORY_SEQ, 0), num(d, HISTORY_FIRST, 1));
}

/** The entry with sequence number seq (JSON text), or undefined (never written, or evicted). */
export function readEntry(seq: number): string | undefined {
    const [v] = dict().get(HISTORY_PREFIX + seq);
    return type(v) === "string" ? (v as string) : undefined;
}

export interface HistoryStats {
    /** entries kept now */
    kept: number;
    /** bytes they take, and the most they may take */
    bytes: number;
    budget: number;
    /** writes not recorded, entries recorded without their body */
    lost: number;
    cut: number;
}

export function historyStats(): HistoryStats {
    const d = dict();
    const seq = num(d, HISTORY_SEQ, 0);
    const first = num(d, HISTORY_FIRST, 1);
    return {
        kept: math.max(0, seq - first + 1), bytes: num(d, HISTORY_BYTES, 0), budget: budget(),
        lost: num(d, HISTORY_LOST, 0), cut: num(d, HISTORY_CUT, 0),
    };
}
