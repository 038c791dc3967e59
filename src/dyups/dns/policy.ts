/** @noSelfInFile */
// The pure rules of DNS re-resolution: TTL clamping and jitter, retry back-off, the serve-stale state machine,
// endpoint-set comparison and SRV answer handling. Nothing here touches ngx.* or the shm: callers pass the
// clock, the options and a random number, so specs (spec/dns/) run them under plain LuaJIT.
import { DEFAULT_WEIGHT, Endpoint, ServerSpec } from "../model";

/** Never re-query a name more often than this (seconds), whatever the TTL and dns_min_ttl say. */
export const FLOOR_DELAY = 1;
/** The longest wait between retries of a failing name (seconds). */
export const MAX_RETRY = 30;
/** Jitter: a refresh happens up to this fraction of the TTL early, so names resolved together spread out. */
export const JITTER = 0.1;

/** The TTL of an answer clamped to [min, max]. A missing or negative TTL counts as min. */
export function clampTtl(ttl: number | undefined, min: number, max: number): number {
    let t = ttl ?? min;
    if (!(t >= min)) t = min; // also catches NaN
    if (t > max) t = max;
    return t;
}

/**
 * Seconds until the next refresh after a good answer: the clamped TTL, minus up to JITTER of it
 * (`rand` in [0, 1)), never below FLOOR_DELAY. Early rather than late: traffic moves within the TTL.
 */
export function refreshDelay(ttl: number | undefined, min: number, max: number, rand: number): number {
    const base = clampTtl(ttl, min, max);
    const d = base - base * JITTER * rand;
    return d < FLOOR_DELAY ? FLOOR_DELAY : d;
}

/**
 * Seconds until the retry after the `fails`-th consecutive failure: max(min, 1) doubling, at most
 * min(max, MAX_RETRY) (a failing name is never retried less often than a good one is refreshed, so it
 * recovers within dns_max_ttl), but at least FLOOR_DELAY; plus up to JITTER late.
 */
export function retryDelay(fails: number, min: number, max: number, rand: number): number {
    let cap = max < MAX_RETRY ? max : MAX_RETRY;
    if (cap < FLOOR_DELAY) cap = FLOOR_DELAY;
    let d = min > FLOOR_DELAY ? min : FLOOR_DELAY;
    for (let i = 2; i <= fails && d < cap; i++) d = d * 2;
    if (d > cap) d = cap;
    return d + d * JITTER * rand;
}

/** What the shm remembers about one query (JSON in dns:q:<key>). Times are ngx.now() seconds. */
export interface QueryState {
    /** the DNS name queried: "api.local" or "_http._tcp.api.local" */
    q: string;
    /** "a" (A, else AAAA) or "srv" */
    kind: string;
    /** the last good answer: for "a" port 0 (each server adds its own port); undefined = never resolved */
    eps?: Endpoint[];
    /** when eps was last confirmed by a good answer */
    at?: number;
    /** the TTL of that answer (seconds, as received) */
    ttl?: number;
    /** when the next query is due */
    next: number;
    /** the last error, while failing */
    err?: string;
    /** consecutive failures */
    fails: number;
    /** when the current failure streak started while good addresses were kept (serving stale) */
    stale?: number;
    /** true once dns_stale_ttl passed: the addresses were dropped (servers using them are unavailable) */
    expired?: boolean;
}

/** "h|p|w" per endpoint, sorted: the identity of an endpoint set (order and duplicates do not matter). O(n log n). */
export function endpointKeys(eps: Endpoint[] | undefined): string[] {
    const keys: string[] = [];
    if (eps === undefined) return keys;
    let n = 0;
    const seen: LuaTable<string, boolean> = new LuaTable();
    for (const [, e] of ipairs(eps)) {
        const k = `${e.host}|${e.port}|${e.weight ?? 0}`;
        if (seen.get(k) !== true) {
            seen.set(k, true);
            n = n + 1;
            keys[n - 1] = k;
        }
    }
    table.sort(keys);
    return keys;
}

/** true when both lists hold the same endpoints (compared as sorted sets). */
export function sameEndpoints(a: Endpoint[] | undefined, b: Endpoint[] | undefined): boolean {
    const ka = endpointKeys(a);
    const kb = endpointKeys(b);
    if (ka.length !== kb.length) return false;
    for (const [i, k] of ipairs(ka)) {
        if (kb[i - 1] !== k) return false;
    }
    return true;
}

function lessEndpoint(a: Endpoint, b: Endpoint): boolean {
    if (a.host !== b.host) return a.host < b.host;
    if (a.port !== b.port) return a.port < b.port;
    return (a.weight ?? 0) < (b.weight ?? 0);
}

/** A sorted copy without duplicates (a stable order: every worker builds the same peer order). */
export function sortedEndpoints(eps: Endpoint[]): Endpoint[] {
    const out: Endpoint[] = [];
    const seen: LuaTable<string, boolean> = new LuaTable();
    let n = 0;
    for (const [, e] of ipairs(eps)) {
        const k = `${e.host}|${e.port}|${e.weight ?? 0}`;
        if (seen.get(k) !== true) {
            seen.set(k, true);
            n = n + 1;
            out[n - 1] = e.weight !== undefined ? { host: e.host, port: e.port, weight: e.weight } : { host: e.host, port: e.port };
        }
    }
    table.sort(out, lessEndpoint);
    return out;
}

/** The query key of a DNS-managed server: "a:<host>" or "srv:<srv name>" (lowercase). */
export function queryKey(s: ServerSpec): string {
    if (s.service !== undefined) return "srv:" + srvName(s.host, s.service);
    return "a:" + string.lower(s.host);
}

/**
 * The SRV name nginx queries for `server HOST service=SVC resolve`: without a dot in SVC, `_SVC._tcp.HOST`;
 * with one, SVC is the prefix as written (`_http._tcp` -> `_http._tcp.HOST`).
 */
export function srvName(host: string, service: string): string {
    const h = string.lower(host);
    if (string.find(service, ".", 1, true)[0] !== undefined) return `${string.lower(service)}.${h}`;
    return `_${string.lower(service)}._tcp.${h}`;
}

/** One SRV record as resty.dns.resolver returns it. */
export interface SrvRecord {
    type: number;
    target?: string;
    port?: number;
    weight?: number;
    priority?: number;
    ttl?: number;
}

export interface SrvTarget {
    target: string;
    port: number;
    /** the record's weight, at least 1 (a weight of 0 still gets traffic, like nginx) */
    weight: number;
}

/**
 * The targets of an SRV answer: only the records of the best (lowest) priority, without the "." target
 * (service not offered). Returns the targets (possibly none) and the smallest TTL among the records used.
 */
export function srvTargets(answers: SrvRecord[], typeSrv: number): LuaMultiReturn<[SrvTarget[], number | undefined]> {
    let best: number | undefined;
    for (const [, a] of ipairs(answers)) {
        if (a.type === typeSrv && a.target !== undefined && a.port !== undefined) {
            const p = a.priority ?? 0;
            if (best === undefined || p < best) best = p;
        }
    }
    const out: SrvTarget[] = [];
    let ttl: number | undefined;
    let n = 0;
    if (best === undefined) return $multi(out, ttl);
    for (const [, a] of ipairs(answers)) {
        if (a.type === typeSrv && a.target !== undefined && a.port !== undefined && (a.priority ?? 0) === best) {
            if (a.ttl !== undefined && (ttl === undefined || a.ttl < ttl)) ttl = a.ttl;
            const target = string.lower(a.target);
            if (target !== "." && target !== "" && a.port > 0) {
                n = n + 1;
                const w = a.weight ?? 0;
                out[n - 1] = { target, port: a.port, weight: w >= 1 ? w : 1 };
            }
        }
    }
    return $multi(out, ttl);
}

/**
 * The endpoints a server gets from its query's state, or undefined when the state says nothing yet
 * (never resolved: keep what the record has). Expired stale state gives none (the server is unavailable).
 * A records take the server's port and weight; SRV records bring port and weight, unless the server sets
 * its own weight (nginx: the parameter wins over the record).
 */
export function serverEndpoints(s: ServerSpec, st: QueryState | undefined): Endpoint[] | undefined {
    if (st === undefined || st.eps === undefined) return undefined;
    const out: Endpoint[] = [];
    if (st.expired === true) return out;
    let n = 0;
    for (const [, e] of ipairs(st.eps)) {
        n = n + 1;
        if (st.kind === "srv") {
            const w = s.weight !== DEFAULT_WEIGHT ? s.weight : (e.weight ?? s.weight);
            out[n - 1] = { host: e.host, port: e.port, weight: w };
        } else {
            out[n - 1] = { host: e.host, port: s.port };
        }
    }
    return sortedEndpoints(out);
}

/** What a state transition means for the log (once per change, never per retry). */
export type Transition = "none" | "resolved" | "changed" | "recovered" | "failing" | "error-changed" | "expired";

export interface DnsLimits {
    minTtl: number;
    maxTtl: number;
    staleTtl: number;
}

/**
 * A good answer (`eps` in any order) at `now`. Mutates and returns the state's transition: "resolved" (first
 * answer of a state with no addresses), "recovered" (after failures), "changed" (other addresses than it had,
 * seeded ones included), "none" (same addresses).
 */
export function onAnswer(st: QueryState, eps: Endpoint[], ttl: number | undefined, now: number, lim: DnsLimits, rand: number): Transition {
    // a state seeded from a record (never answered here) reports a real change, not a first resolution
    const first = st.at === undefined && st.err === undefined && st.eps === undefined;
    const wasFailing = st.err !== undefined || st.expired === true;
    const changed = !sameEndpoints(st.eps, eps) || st.expired === true;
    st.eps = sortedEndpoints(eps);
    st.at = now;
    st.ttl = ttl;
    st.err = undefined;
    st.fails = 0;
    st.stale = undefined;
    st.expired = undefined;
    st.next = now + refreshDelay(ttl, lim.minTtl, lim.maxTtl, rand);
    if (first) return "resolved";
    if (wasFailing) return "recovered";
    return changed ? "changed" : "none";
}

/**
 * A failed query (timeout, SERVFAIL, NXDOMAIN, no addresses) at `now`. The last good addresses stay for
 * staleTtl seconds from the first failure, then they are dropped (expired). The retry is scheduled by back-off
 * but never later than the stale deadline, so the expiry happens on time. Mutates st; returns the transition:
 * "failing" (a good or never-resolved state started failing), "error-changed" (another error), "expired", "none".
 */
export function onFailure(st: QueryState, err: string, now: number, lim: DnsLimits, rand: number): Transition {
    const prevErr = st.err;
    st.fails = (st.fails ?? 0) + 1;
    st.err = err;
    let t: Transition = prevErr === undefined ? "failing" : (prevErr !== err ? "error-changed" : "none");
    const hasGood = st.eps !== undefined && st.eps.length > 0 && st.expired !== true;
    if (hasGood && st.stale === undefined) st.stale = now;
    let next = now + retryDelay(st.fails, lim.minTtl, lim.maxTtl, rand);
    if (hasGood && st.stale !== undefined) {
        const deadline = st.stale + lim.staleTtl;
        if (now >= deadline) {
            st.expired = true;
            t = "expired";
        } else if (next > deadline) {
            next = deadline;
        }
    }
    st.next = next;
    return t;
}

/** A new state for a query nobody resolved yet, due at `now`; `seed` = endpoints a record already has. */
export function newState(q: string, kind: string, now: number, seed?: Endpoint[]): QueryState {
    const st: QueryState = { q, kind, next: now, fails: 0 };
    if (seed !== undefined && seed.length > 0) st.eps = sortedEndpoints(seed);
    return st;
}
