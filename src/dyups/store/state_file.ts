/** @noSelfInFile */
// What the state file's jobs keep in the dict (dyups.state.save writes the file, dyups.state.load reads it at
// start): the version last saved (sf:saved), the earliest time of the next save (sf:next: saves are paced),
// the last save's outcome (sf:last, fixed length: in place), the count of failed saves (sf:fails) and the
// report of the last start-up load (sf:load). Keys: store/keys.ts.
// Phases: any (a few shm gets/sets).
import * as cjson from "cjson.safe";
import { dict } from "./dict";
import { LOAD_REPORT, SAVE_FAILS, SAVE_LAST, SAVE_LEN, STATE_FILE_LEASE, STATE_NEXT, STATE_SAVED } from "./keys";
import { acquire, release, renew } from "./lease";

/** the state_file lease's TTL: the saver renews it between chunks */
const LEASE_TTL = 10;

/** The version last written to the state file (0: none). */
export function savedVersion(): number {
    const [v] = dict().get(STATE_SAVED);
    return (v as number | undefined) ?? 0;
}

export function setSavedVersion(v: number): void {
    dict().safe_set(STATE_SAVED, v);
}

/** The earliest time (ngx.now()) of the next save (0: now). */
export function nextSaveAt(): number {
    return (dict().get(STATE_NEXT)[0] as number | undefined) ?? 0;
}

/** Paces saves: the next one comes no sooner than `at` (TTL 60 s). */
export function setNextSave(at: number): void {
    dict().safe_set(STATE_NEXT, at, 60);
}

/**
 * Puts the next save off by `seconds` (never sooner than already planned): a bulk load in progress (the
 * cluster watcher's full read) whose intermediate states are not worth an O(upstreams) save each.
 */
export function deferSave(seconds: number): void {
    const until = ngx.now() + seconds;
    if (nextSaveAt() < until) setNextSave(until);
}

/** One saving worker at a time. */
export function takeSaveLease(): boolean {
    return acquire(STATE_FILE_LEASE, LEASE_TTL);
}

export function renewSaveLease(): void {
    renew(STATE_FILE_LEASE, LEASE_TTL);
}

export function releaseSaveLease(): void {
    release(STATE_FILE_LEASE);
}

export interface SaveOutcome {
    /** ngx.now() at the end of the save */
    at: number;
    ok: boolean;
    /** the version it saved (or tried to) */
    version: number;
    /** how long it took */
    ms: number;
    bytes: number;
    error?: string;
}

/** Records a save's outcome (and counts a failure). In place: works in a full dict. */
export function recordSave(o: SaveOutcome): void {
    const d = dict();
    const head = `${o.at} ${o.ok ? 1 : 0} ${o.version} ${o.ms} ${o.bytes} `;
    let text = head + string.gsub(o.error ?? "", "[\r\n]", " ")[0];
    if (text.length > SAVE_LEN) text = string.sub(text, 1, SAVE_LEN);
    d.safe_set(SAVE_LAST, text + string.rep(" ", SAVE_LEN - text.length));
    if (!o.ok) {
        const [n] = d.incr(SAVE_FAILS, 1);
        if (n === undefined) d.safe_add(SAVE_FAILS, 1);
    }
}

/** The last save's outcome, or undefined when none was recorded since start-up. */
export function lastSave(): SaveOutcome | undefined {
    const [raw] = dict().get(SAVE_LAST);
    if (raw === undefined || type(raw) !== "string") return undefined;
    const [at, ok, v, ms, bytes, err] = string.match(raw as string, "^(%S+) ([01]) (%d+) (%S+) (%d+) (.-) *$");
    if (at === undefined) return undefined;
    return {
        at: tonumber(at) as number, ok: ok === "1", version: tonumber(v) as number, ms: tonumber(ms) as number,
        bytes: tonumber(bytes) as number, error: err !== "" ? err : undefined,
    };
}

/** How many saves failed since start-up. */
export function saveFailures(): number {
    const [n] = dict().get(SAVE_FAILS);
    return (n as number | undefined) ?? 0;
}

/** Makes the counters resident (init, master). */
export function prepareStateKeys(): void {
    dict().safe_add(SAVE_FAILS, 0);
}

/** Stores the report of the start-up load (init, master). */
export function setLoadReport(report: unknown): void {
    const [enc] = cjson.encode(report);
    if (enc !== undefined) dict().safe_set(LOAD_REPORT, enc);
}

/** The report of the last start-up load, or undefined. */
export function loadReport(): unknown {
    const [raw] = dict().get(LOAD_REPORT);
    if (raw === undefined) return undefined;
    const [t] = cjson.decode(raw as string);
    return t;
}
