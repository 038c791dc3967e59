/** @noSelfInFile */
// Which peers the prober probes: one target per state id (peer address + check configuration), however many
// upstreams (or server lines) list it, counted by reference. Derived from the command log's records, never
// from a worker's built versions, so the prober needs nothing from the other workers and rebuilds it alone
// when it takes over. Pure bookkeeping (no ngx except through config's md5): tested under plain LuaJIT.
//
// Servers marked `down` are not checked (as in the module); backups are. A server name resolving to several
// addresses gives one target per address. Cost: O(servers of the record) per applied record.
import { Endpoint, UpstreamRecord } from "../model";
import { CheckConfig, resolveCheck, stateId } from "./config";
import { ProbeTarget } from "./probe";
import { HealthState } from "./state";

export interface Target extends ProbeTarget {
    /** the state id (shm key suffix) */
    id: string;
    /** the server address as the status page shows it (host:port, [v6]:port, unix:path) */
    addr: string;
    /** server lines (across upstreams) that list it */
    refs: number;
    /** upstream name -> server lines of it that list this target */
    names: LuaTable<string, number>;
    /** next probe (ngx.now() seconds) */
    due: number;
    /** no upstream lists it any more: a probe in flight drops its result */
    removed: boolean;
    /** the state as the prober last wrote it (loaded when the target is created) */
    st: HealthState | undefined;
    /** st was created here and not stored yet */
    fresh: boolean;
    /** when the prober last wrote hc:d (its TTL is renewed now and then) */
    dWritten: number;
}

export interface TargetSet {
    byId: LuaTable<string, Target>;
    /** upstream name -> the ids its record lists (with repeats: one per server line) */
    byName: LuaTable<string, string[]>;
    count: number;
}

export function newTargetSet(): TargetSet {
    return { byId: new LuaTable(), byName: new LuaTable(), count: 0 };
}

/** The shm id of an endpoint (as registry.endpointId: "host:port", "[v6]:port", "unix:/path"). */
export function addrOf(e: Endpoint): string {
    if (e.port === 0 || string.sub(e.host, 1, 5) === "unix:") return e.host;
    if (string.find(e.host, ":", 1, true)[0] !== undefined) return `[${e.host}]:${e.port}`;
    return `${e.host}:${e.port}`;
}

/** One checked peer a record asks for. */
export interface Wanted {
    id: string;
    addr: string;
    host: string;
    port: number;
    cfg: CheckConfig;
}

/** The checked peers of a record, in body order (servers marked down are not checked). */
export function wantedOf(rec: UpstreamRecord): Wanted[] {
    const out: Wanted[] = [];
    const spec = rec.spec;
    if (spec === undefined || spec.check === undefined) return out;
    const cfg = resolveCheck(spec.check);
    for (const [i, s] of ipairs(spec.servers)) {
        if (!s.down) {
            const eps = rec.endpoints[i - 1];
            if (eps !== undefined) {
                for (const [, e] of ipairs(eps)) {
                    const addr = addrOf(e);
                    const unix = e.port === 0 || string.sub(e.host, 1, 5) === "unix:";
                    // cosockets take IPv6 literals in brackets
                    const host = !unix && string.find(e.host, ":", 1, true)[0] !== undefined ? `[${e.host}]` : e.host;
                    out[out.length] = { id: stateId(cfg, addr), addr, host, port: unix ? 0 : cfg.port > 0 ? cfg.port : e.port, cfg };
                }
            }
        }
    }
    return out;
}

/**
 * Applies the current record of NAME (undefined: deleted). New references are counted before old ones are
 * dropped, so a target that both versions list keeps its object, schedule and any probe in flight.
 * Returns the targets created and the targets no upstream lists any more (marked removed).
 */
export function applyRecord(ts: TargetSet, name: string, rec: UpstreamRecord | undefined): LuaMultiReturn<[Target[], Target[]]> {
    const added: Target[] = [];
    const removed: Target[] = [];
    const wanted = rec !== undefined ? wantedOf(rec) : [];
    const ids: string[] = [];
    for (const [, w] of ipairs(wanted)) {
        ids[ids.length] = w.id;
        let t = ts.byId.get(w.id);
        if (t === undefined) {
            t = { id: w.id, addr: w.addr, host: w.host, port: w.port, cfg: w.cfg, pool: `dyups-hc:${w.id}`, refs: 0, names: new LuaTable(), due: 0, removed: false, st: undefined, fresh: false, dWritten: 0 };
            ts.byId.set(w.id, t);
            ts.count = ts.count + 1;
            added[added.length] = t;
        }
        t.refs = t.refs + 1;
        t.names.set(name, (t.names.get(name) ?? 0) + 1);
    }
    const old = ts.byName.get(name);
    if (old !== undefined) {
        for (const [, id] of ipairs(old)) {
            const t = ts.byId.get(id);
            if (t !== undefined) {
                t.refs = t.refs - 1;
                const left = (t.names.get(name) ?? 1) - 1;
                if (left > 0) t.names.set(name, left);
                else t.names.delete(name);
                if (t.refs <= 0) {
                    t.removed = true;
                    ts.byId.delete(id);
                    ts.count = ts.count - 1;
                    removed[removed.length] = t;
                }
            }
        }
    }
    if (ids.length > 0) ts.byName.set(name, ids);
    else ts.byName.delete(name);
    return $multi(added, removed);
}

/** The upstream names that list a target, sorted (for log lines and status). */
export function namesOf(t: Target): string[] {
    const out: string[] = [];
    for (const [n] of pairs(t.names)) out[out.length] = n;
    table.sort(out);
    return out;
}
