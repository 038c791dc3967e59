/** @noSelfInFile */
// What GET /metrics and GET /stats list per upstream: its peers (one per address, as the counters are
// kept), their weights, flags and the keys of their health state, cached per worker by revision so that a
// scrape decodes only the records that changed since the last one. Content phase (and specs).
// Touches no shm itself: records come from the command log through registry/sync.record.
//
// Two server entries with the same address are one peer here, as they are one series: weight is their
// sum, down/backup hold when every entry says so (drain: when every entry is down or drained, not all
// down), passive health holds it out when one entry is held out.
// Servers marked down are not checked (no check key).
// Costs: one JSON decode per changed record; about 0.5 KB per upstream in the worker that serves scrapes
// (the key prefixes and label texts are built here once, not at every scrape).
import { endpointId } from "../registry/build";
import { appliedVersion, eachName, record, revision } from "../registry/sync";
import { resolveCheck, stateId } from "../health/config";
import { downKey } from "../store/health";
import { entryIds } from "../store/peer_health";
import { slotPrefix } from "../store/metrics";
import { P_CLASS, P_DONE, P_TRY, U_BUCKET, U_CLASS, U_REQ, U_RETRY, U_SUM } from "./counters";

export interface PeerInfo {
    /** the address: "host:port", "[v6]:port", "unix:/path" (the `peer` label) */
    id: string;
    /** the server directive's address as written ("api.local:8080") */
    server: string;
    weight: number;
    backup: boolean;
    down: boolean;
    /** drained (`drain`): every entry is drained or down, and not every one down; the balancer skips it */
    drain: boolean;
    /** its server entries (store/peer_health.ts: "<upstream>/<address>#<n>"), their max_fails and fail_timeout */
    entries: string[];
    maxFails: number[];
    failTimeouts: number[];
    /** the hc:d key of its active-check state, or "" (not checked) */
    checkKey: string;
    /** its counters' key prefix (store/metrics.ts), and its labels: `{upstream="NAME",peer="ADDR"` (unclosed) */
    prefix: string;
    label: string;
    /** the keys every scrape reads (tries, 2xx, finished tries): built once, not per scrape */
    kTry: string;
    kOk: string;
    kDone: string;
}

export interface UpstreamInfo {
    name: string;
    /** the spelling /list shows */
    display: string;
    rev: number;
    method: string;
    peers: PeerInfo[];
    /** `check` configured (default_down decides a peer not probed yet) */
    checked: boolean;
    defaultDown: boolean;
    /** its counters' key prefix, and its labels: `{upstream="NAME"` (unclosed) */
    prefix: string;
    label: string;
    /** the keys every scrape reads (requests, 2xx, retries, the response times' sum, the first bucket) */
    kReq: string;
    kOk: string;
    kRetry: string;
    kSum: string;
    kB1: string;
}

/** A label value as the exposition format wants it: backslash, double quote and newline escaped. */
export function labelValue(v: string): string {
    if (string.find(v, '[\\"\n]')[0] === undefined) return v;
    const [a] = string.gsub(v, "\\", "\\\\");
    const [b] = string.gsub(a, '"', '\\"');
    const [c] = string.gsub(b, "\n", "\\n");
    return c;
}

const cache: LuaTable<string, UpstreamInfo> = new LuaTable();

function build(name: string): UpstreamInfo | undefined {
    const rec = record(name);
    if (rec === undefined) return undefined;
    const spec = rec.spec;
    const cfg = spec.check !== undefined ? resolveCheck(spec.check) : undefined;
    // one peer per address, in body order (as /detail lists them)
    const peers: PeerInfo[] = [];
    const byId: LuaTable<string, PeerInfo> = new LuaTable();
    const label = `{upstream="${labelValue(name)}"`;
    for (const [i, s] of ipairs(spec.servers)) {
        for (const [, e] of ipairs(rec.endpoints[i - 1] ?? [])) {
            const id = endpointId(e);
            const w = e.weight ?? s.weight;
            const p = byId.get(id);
            const off = s.down || s.drain === true;
            if (p !== undefined) {
                p.weight = p.weight + w;
                p.backup = p.backup && s.backup;
                p.drain = p.drain && off; // every entry out so far (down or drained); settled below
                if (!s.down && p.down) {
                    p.down = false;
                    p.checkKey = cfg !== undefined ? downKey(stateId(cfg, id)) : "";
                }
            } else {
                const np: PeerInfo = {
                    id, server: s.addr, weight: w, backup: s.backup, down: s.down, drain: off, entries: [], maxFails: [], failTimeouts: [],
                    checkKey: cfg !== undefined && !s.down ? downKey(stateId(cfg, id)) : "",
                    prefix: slotPrefix(name, id), label: `${label},peer="${labelValue(id)}"`,
                    kTry: "", kOk: "", kDone: "",
                };
                np.kTry = np.prefix + P_TRY;
                np.kOk = np.prefix + (P_CLASS + 2);
                np.kDone = np.prefix + P_DONE;
                byId.set(id, np);
                peers[peers.length] = np;
            }
        }
    }
    for (const [, p] of ipairs(peers)) p.drain = p.drain && !p.down;
    // server entries are numbered in the peer set's order: primaries, then backups, each in body order
    const order: string[] = [];
    const orderServer: number[] = [];
    let primaries = 0;
    let backups = 0;
    for (let pass = 0; pass < 2; pass++) {
        for (const [i, s] of ipairs(spec.servers)) {
            if (s.backup === (pass === 1)) {
                for (const [, e] of ipairs(rec.endpoints[i - 1] ?? [])) {
                    order[order.length] = endpointId(e);
                    orderServer[orderServer.length] = i;
                    if (s.backup) backups = backups + 1;
                    else primaries = primaries + 1;
                }
            }
        }
    }
    // nginx never takes a lone server out for failures (peers->single): no passive state to show then
    const single = primaries === 1 && backups === 0;
    for (const [j, entry] of ipairs(entryIds(name, order))) {
        const s = spec.servers[orderServer[j - 1] - 1];
        const p = byId.get(order[j - 1]);
        if (!single && s.maxFails > 0 && p !== undefined) {
            p.entries[p.entries.length] = entry;
            p.maxFails[p.maxFails.length] = s.maxFails;
            p.failTimeouts[p.failTimeouts.length] = s.failTimeout;
        }
    }
    const prefix = slotPrefix(name, "");
    return {
        name, display: rec.display ?? name, rev: rec.rev, method: spec.method, peers,
        checked: cfg !== undefined, defaultDown: cfg !== undefined && cfg.defaultDown,
        prefix, label, kReq: prefix + U_REQ, kOk: prefix + (U_CLASS + 2), kRetry: prefix + U_RETRY,
        kSum: prefix + U_SUM, kB1: prefix + (U_BUCKET + 1),
    };
}

/** NAME's peers as this worker routes by them (rebuilt when its revision moved), or undefined. */
export function upstreamInfo(name: string): UpstreamInfo | undefined {
    const rev = revision(name);
    if (rev === undefined) {
        cache.delete(name);
        return undefined;
    }
    const hit = cache.get(name);
    if (hit !== undefined && hit.rev === rev) return hit;
    const info = build(name);
    if (info === undefined) cache.delete(name);
    else cache.set(name, info);
    return info;
}

let sorted: string[] = [];
let sortedAt = -1;

/**
 * The names of every current upstream (this worker's registry: no shm lock), sorted; computed again only when
 * this worker applied a change since (O(n log n)). Callers must not change the list.
 */
export function sortedNames(): string[] {
    const v = appliedVersion();
    if (v === sortedAt) return sorted;
    const names: string[] = [];
    for (const [name] of eachName()) names[names.length] = name;
    table.sort(names);
    sorted = names;
    sortedAt = v;
    return names;
}

let prunedAt = -1;

/** Drops cached entries of upstreams that no longer exist (after a change only). O(cached). */
export function pruneCatalog(): void {
    const v = appliedVersion();
    if (v === prunedAt) return;
    prunedAt = v;
    const gone: string[] = [];
    for (const [name] of pairs(cache)) if (revision(name) === undefined) gone[gone.length] = name;
    for (const [, name] of ipairs(gone)) cache.delete(name);
}
