/** @noSelfInFile */
// The `dns` part of GET /status (content phase): which worker resolves, and per query (host name or SRV name):
// its upstreams, addresses, last good resolution, TTL, next refresh, last error, stale-since. Reads the shm
// keys dyups.dns.refresh writes (dns:owner, dns:names, dns:q:<key>); O(queries in use).
import * as cjson from "cjson.safe";
import { DNS_NAMES, DNS_OWNER } from "../store/keys";
import { shm } from "../store/shm";
import { loadState } from "./refresh";

export function dnsStatus(): unknown {
    const d = shm();
    const now = ngx.now();
    const [owner] = d.get(DNS_OWNER);
    const [raw] = d.get(DNS_NAMES);
    const names: unknown[] = [];
    if (raw !== undefined) {
        const [index] = cjson.decode(raw as string);
        if (index !== undefined && type(index) === "table") {
            const keys: string[] = [];
            for (const [k] of pairs(index as LuaTable<string, string[]>)) keys[keys.length] = k;
            table.sort(keys);
            for (const [, key] of ipairs(keys)) {
                const st = loadState(key);
                if (st !== undefined) {
                    const addresses: string[] = [];
                    if (st.eps !== undefined && st.expired !== true) {
                        for (const [, e] of ipairs(st.eps)) {
                            addresses[addresses.length] = e.port > 0
                                ? (e.weight !== undefined ? `${e.host}:${e.port} weight=${e.weight}` : `${e.host}:${e.port}`)
                                : e.host;
                        }
                    }
                    names[names.length] = {
                        name: st.q,
                        type: st.kind === "srv" ? "SRV" : "A",
                        upstreams: (index as LuaTable<string, string[]>).get(key),
                        addresses,
                        resolved: st.eps !== undefined,
                        last_resolved: st.at,
                        ttl: st.ttl,
                        next_refresh: st.next,
                        next_refresh_in: math.max(0, st.next - now),
                        last_error: st.err,
                        failures: st.fails,
                        stale_since: st.stale,
                        stale_expired: st.expired === true,
                    };
                }
            }
        }
    }
    return { owner, names };
}
