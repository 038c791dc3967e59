/** @noSelfInFile */
// What GET /metrics and GET /stats list per upstream: its peers (one per address, as the counters are
// kept), their weights, flags and the keys of their health state, cached per worker by revision so that a
// scrape decodes only the records that changed since the last one. Content phase (and specs).
// Touches no shm itself: records come from the command log through registry/sync.record.
//
// Two server entries with the same address are one peer here, as they are one series: weight is their
// sum, down/backup hold when every entry says so. Servers marked down are not checked (no check key).
// Costs: one JSON decode per changed record; about 0.3 KB per upstream in the worker that serves scrapes.
import { endpointId } from "../registry/build";
import { eachName, record, revision } from "../registry/sync";
import { resolveCheck, stateId } from "../health/config";
import { downKey } from "../store/health";

export interface PeerInfo {
    /** the address: "host:port", "[v6]:port", "unix:/path" (the `peer` label) */
    id: string;
    /** the server directive's address as written ("api.local:8080") */
    server: string;
    weight: number;
    backup: boolean;
    down: boolean;
    /** max_fails of its entry (0: passive health off) */
    maxFails: number;
    /** the hc:d key of its active-check state, or "" (not checked) */
    checkKey: string;
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
}

const cache: LuaTable<string, UpstreamInfo> = new LuaTable();

function build(name: string): UpstreamInfo | undefined {
    const rec = record(name);
    if (rec === undefined) return undefined;
    const spec = rec.spec;
    const cfg = spec.check !== undefined ? resolveCheck(spec.check) : undefined;
    const peers: PeerInfo[] = [];
    const byId: LuaTable<string, PeerInfo> = new LuaTable();
    for (const [i, s] of ipairs(spec.servers)) {
        const eps = rec.endpoints[i - 1] ?? [];
        for (const [, e] of ipairs(eps)) {
            const id = endpointId(e);
            const w = e.weight ?? s.weight;
            const seen = byId.get(id);
            if (seen !== undefined) {
                seen.weight = seen.weight + w;
                seen.backup = seen.backup && s.backup;
                if (!s.down && seen.down) {
                    seen.down = false;
                    seen.checkKey = cfg !== undefined ? downKey(stateId(cfg, id)) : "";
                }
                if (s.maxFails > seen.maxFails) seen.maxFails = s.maxFails;
            } else {
                const p: PeerInfo = {
                    id, server: s.addr, weight: w, backup: s.backup, down: s.down, maxFails: s.maxFails,
                    checkKey: cfg !== undefined && !s.down ? downKey(stateId(cfg, id)) : "",
                };
                byId.set(id, p);
                peers[peers.length] = p;
            }
        }
    }
    return {
        name, display: rec.display ?? name, rev: rec.rev, method: spec.method, peers,
        checked: cfg !== undefined, defaultDown: cfg !== undefined && cfg.defaultDown,
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

/** The names of every current upstream (this worker's registry: no shm lock), sorted. O(n log n). */
export function sortedNames(): string[] {
    const names: string[] = [];
    for (const [name] of eachName()) names[names.length] = name;
    table.sort(names);
    return names;
}

/** Drops cached entries of upstreams that no longer exist. O(cached). */
export function pruneCatalog(): void {
    const gone: string[] = [];
    for (const [name] of pairs(cache)) if (revision(name) === undefined) gone[gone.length] = name;
    for (const [, name] of ipairs(gone)) cache.delete(name);
}
