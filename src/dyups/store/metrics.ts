/** @noSelfInFile */
// The metrics dict (option metrics_dict, declared by nginx/dyups.conf; key families m:, mw:, md:, mx: in
// store/keys.ts): counters that every worker adds its deltas to, and the reads GET /metrics and GET /stats
// make. A dict of its own, so counters can never take the space of the configuration (a full metrics dict
// drops deltas and counts them; writes of upstreams never see it).
//
// Writes: incr on an existing key (no allocation); a missing key is created with safe_add, which never
// evicts. Never incr with an init value here: lua-nginx-module's incr-with-init evicts the least recently
// used keys when the dict is full. Phases: any that may touch shm but the request path (the publisher's
// timer, the write pipeline, the DNS refresher, content handlers). No locks are held across calls.
// Race accepted: two workers creating one key at once (safe_add says "exists" to one, which then adds).
import { getOptions } from "../options";
import { dict } from "./dict";
import { CHECKED_PREFIX, FAILS_PREFIX, HEALTH_GEN, METRIC_DNS_PREFIX, METRIC_DROPPED, METRIC_PREFIX, METRIC_WRITES_PREFIX } from "./keys";

let handle: NgxSharedDict | undefined;
let looked = false;

/** The metrics dict, or undefined when it is not declared (counting is then off; see startup). */
export function metricsDict(): NgxSharedDict | undefined {
    if (!looked) {
        looked = true;
        handle = ngx.shared[getOptions().metrics_dict];
    }
    return handle;
}

/** Whether lua_shared_dict NAME is declared (init() refuses a metrics_dict option naming a missing one). */
export function dictDeclared(name: string): boolean {
    return ngx.shared[name] !== undefined;
}

/** Forget the handle (init() after the options change; specs). */
export function resetMetricsDict(): void {
    looked = false;
    handle = undefined;
}

/** The key prefix of one slot's counters: counter i is prefix .. i. peer "" is the upstream's own slot. */
export function slotPrefix(name: string, peer: string): string {
    return METRIC_PREFIX + name + "|" + peer + "|";
}

let warned = false;

function dropped(d: NgxSharedDict, n: number): void {
    d.incr(METRIC_DROPPED, n); // created by prepareMetricsDict (never with an init value: see the header)
    if (!warned) {
        warned = true;
        ngx.log(ngx.WARN, "dyups: the metrics dict \"", getOptions().metrics_dict, "\" is full: counts are dropped ",
            "(enlarge its lua_shared_dict; dyups_metrics_dropped_total counts them)");
    }
}

/** Adds delta to counter key. false: dropped (the dict is full; counted in mx:dropped, logged once). */
export function addDelta(d: NgxSharedDict, key: string, delta: number): boolean {
    const [v, err] = d.incr(key, delta);
    if (v !== undefined) return true;
    if (err === "not found") {
        const [ok, aerr] = d.safe_add(key, delta);
        if (ok) return true;
        if (aerr === "exists") {
            const [v2] = d.incr(key, delta);
            if (v2 !== undefined) return true;
        }
    }
    dropped(d, 1);
    return false;
}

/** Counter `key` (0 when absent). */
export function readCounter(d: NgxSharedDict, key: string): number {
    const [v] = d.get(key);
    return type(v) === "number" ? (v as number) : 0;
}

/** Deletes counters prefix..1 through prefix..n (a slot whose upstream or peer is gone). */
export function deleteCounters(d: NgxSharedDict, prefix: string, n: number): void {
    for (let i = 1; i <= n; i++) d.delete(prefix + i);
}

/** init() (master): the counters that are incremented without an init value must exist. */
export function prepareMetricsDict(): void {
    const d = metricsDict();
    if (d !== undefined) d.safe_add(METRIC_DROPPED, 0);
}

/** A write through the pipeline answered `status`. */
export function countWrite(status: number): void {
    const d = metricsDict();
    if (d !== undefined) addDelta(d, METRIC_WRITES_PREFIX + status, 1);
}

export function writeCount(status: number): number {
    const d = metricsDict();
    return d === undefined ? 0 : readCounter(d, METRIC_WRITES_PREFIX + status);
}

/** A DNS query ended with `result` (metrics/hooks.ts names it). */
export function countDns(result: string): void {
    const d = metricsDict();
    if (d !== undefined) addDelta(d, METRIC_DNS_PREFIX + result, 1);
}

export function dnsCount(result: string): number {
    const d = metricsDict();
    return d === undefined ? 0 : readCounter(d, METRIC_DNS_PREFIX + result);
}

export function droppedCount(): number {
    const d = metricsDict();
    return d === undefined ? 0 : readCounter(d, METRIC_DROPPED);
}

/** Capacity and free bytes of the metrics dict, or undefined when it is not declared. */
export function metricsDictUsage(): LuaMultiReturn<[number, number] | [undefined, undefined]> {
    const d = metricsDict();
    if (d === undefined) return $multi(undefined, undefined);
    return $multi(d.capacity(), d.free_space());
}

/**
 * The passive-health state of server entry `entry` (store/peer_health.ts's f:/fc: keys, in the configuration
 * dict): its failure count and its `checked` time (0 when it has no failure). A read for the status views,
 * which apply nginx's rule themselves (metrics/read.ts); the balancer has its own cache.
 */
export function passiveState(entry: string): LuaMultiReturn<[number, number]> {
    const d = dict();
    const [f] = d.get(FAILS_PREFIX + entry);
    if (type(f) !== "number" || (f as number) <= 0) return $multi(0, 0);
    const [c] = d.get(CHECKED_PREFIX + entry);
    return $multi(f as number, type(c) === "number" ? (c as number) : 0);
}

/** The health generation (hg): it moves at every change of passive or active health state. */
export function healthGeneration(): number {
    const [g] = dict().get(HEALTH_GEN);
    return type(g) === "number" ? (g as number) : 0;
}
