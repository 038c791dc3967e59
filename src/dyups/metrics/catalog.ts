/** @noSelfInFile */
// What GET /metrics and GET /stats list per upstream: its peers (one per address, as the counters are
// kept), their weights, flags and the keys of their health state, cached per worker by revision so that a
// scrape decodes only the records that changed since the last one. Content phase (and specs).
// Touches no shm itself: records come from the command log through registry/sync.record.
//
// Two server entries with the same address are one peer here, as they are one series: weight is their
// sum, down/backup hold when every entry says so, passive health holds it out when one entry is held out.
// Servers marked down are not checked (no check key).
// Costs: one JSON decode per changed record; about 0.3 KB per upstream in the worker that serves scrapes.
import { endpointId } from "../registry/build";
import { eachName, record, revision } from "../registry/sync";
import { resolveCheck, stateId } from "../health/config";
import { downKey } from "../store/health";
import { entryIds } from "../store/peer_health";

export interface PeerInfo {
    /** the address: "host:port", "[v6]:port", "unix:/path" (the `peer` label) */
    id: string;
    /** the server directive's address as written ("api.local:8080") */
    server: string;
    weight: number;
    backup: boolean;
    down: boolean;
    /** its server entries (store/peer_health.ts: "<upstream>/<address>#<n>"), their max_fails and fail_timeout */
    entries: string[];
    maxFails: number[];
    failTimeouts: number[];
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
    // one peer per address, in body order (as /detail lists them)
    const peers: PeerInfo[] = [];
    const byId: LuaTable<string, PeerInfo> = new LuaTable();
    for (const [i, s] of ipairs(spec.servers)) {
        for (const [, e] of ipairs(rec.endpoints[i - 1] ?? [])) {
            const id = endpointId(e);
            const w = e.weight ?? s.weight;
            const p = byId.get(id);
            if (p !== undefined) {
                p.weight = p.weight + w;
                p.backup = p.backup && s.backup;
                if (!s.down && p.down) {
                    p.down = false;
                    p.checkKey = cfg !== undefined ? downKey(stateId(cfg, id)) : "";
                }
            } else {
                const np: PeerInfo = {
                    id, server: s.addr, weight: w, backup: s.backup, down: s.down, entries: [], maxFails: [], failTimeouts: [],
                    checkKey: cfg !== undefined && !s.down ? downKey(stateId(cfg, id)) : "",
                };
                byId.set(id, np);
                peers[peers.length] = np;
            }
        }
    }
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
