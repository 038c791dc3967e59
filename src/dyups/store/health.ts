/** @noSelfInFile */
// The shared-memory side of active health checks (key families hc:* in store/keys.ts): the state of each
// checked peer, keyed by peer address + check configuration, so every worker sees the same up/down, a
// replaced upstream keeps the state of the servers it still lists, and different configurations never
// share a state.
//
// Writers: the prober (one worker, health/prober.ts) writes hc:s and hc:d; init() bumps hc:gen. Readers:
// the balancer's health cache reads hc:d (one get per peer after `hg` moved), status pages read hc:s.
// Writes use safe_set: a full dict never evicts configuration; a refused write keeps the old value and is
// reported to the caller. Phases: reads anywhere; writes in timers and init.
import { dict } from "./dict";
import { HEALTH_CONF_GEN, HEALTH_DOWN_PREFIX, HEALTH_GEN, HEALTH_PROBER, HEALTH_STATE_PREFIX } from "./keys";
import { decodeState, encodeState, HealthState } from "../health/state";

/** Bytes a checked peer's state takes in the dict, about (keys, values, node overhead): for capacity checks. */
export const STATE_BYTES = 320;

/** Seconds a state outlives its last write when nobody deletes it (see keys.ts). */
function stateTtl(intervalMs: number, timeoutMs: number): number {
    return math.ceil((2 * intervalMs + timeoutMs) / 1000) + 60;
}

/** The stored state of peer `id`, or undefined (never probed, released, or unreadable). */
export function readState(id: string): HealthState | undefined {
    const [raw] = dict().get(HEALTH_STATE_PREFIX + id);
    if (raw === undefined || type(raw) !== "string") return undefined;
    return decodeState(raw as string);
}

/**
 * Stores the state of `id`. changed: its up/down changed (or it is new): hc:d is written too and the health
 * generation moves, so every worker re-reads it. refreshDown: rewrite hc:d (same value) to renew its TTL. Returns [true] or [undefined, reason] (dict full: the old
 * value stays).
 */
export function writeState(id: string, st: HealthState, changed: boolean, refreshDown: boolean, intervalMs: number, timeoutMs: number): LuaMultiReturn<[true, undefined] | [undefined, string]> {
    const d = dict();
    const ttl = stateTtl(intervalMs, timeoutMs);
    const [ok, err] = d.safe_set(HEALTH_STATE_PREFIX + id, encodeState(st), ttl);
    if (!ok) return $multi(undefined, `cannot store the health state: ${err}`);
    const dkey = HEALTH_DOWN_PREFIX + id;
    if (changed || refreshDown) {
        // on a change, and now and then to renew its TTL (the prober asks: not on every probe)
        const [ok2, err2] = d.safe_set(dkey, st.down ? 1 : 0, ttl);
        if (!ok2) return $multi(undefined, `cannot store the health state: ${err2}`);
        if (changed) d.incr(HEALTH_GEN, 1, 0);
    }
    return $multi(true, undefined);
}

/** Forgets the state of `id` (no upstream lists it any more); workers re-read at the next generation. */
export function deleteState(id: string): void {
    const d = dict();
    d.delete(HEALTH_STATE_PREFIX + id);
    d.delete(HEALTH_DOWN_PREFIX + id);
    d.incr(HEALTH_GEN, 1, 0);
}

/** The down flag key of `id` (precomputed per peer by the version builder: the hot path builds no strings). */
export function downKey(id: string): string {
    return HEALTH_DOWN_PREFIX + id;
}

/** The down flag at key (from downKey): 1 down, 0 up, -1 not stored. One shm get (the balancer's cache misses). */
export function readDownFlag(key: string): number {
    const [v] = dict().get(key);
    return v === undefined ? -1 : (v as number);
}

/** init(): a new configuration generation (the status page's "generation"), as the module's zone gets one per load. */
export function bumpConfGeneration(): void {
    dict().incr(HEALTH_CONF_GEN, 1, 0);
}

export function confGeneration(): number {
    const [g] = dict().get(HEALTH_CONF_GEN);
    return (g as number | undefined) ?? 1;
}

/** The prober's published figures (JSON text), or undefined. */
export function readProberStats(): string | undefined {
    const [raw] = dict().get(HEALTH_PROBER);
    return raw as string | undefined;
}

export function writeProberStats(json: string): void {
    dict().safe_set(HEALTH_PROBER, json, 10);
}

/** Free bytes in the dict (free pages: conservative). */
export function freeBytes(): number {
    return dict().free_space();
}
