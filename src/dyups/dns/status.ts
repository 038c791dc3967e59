/** @noSelfInFile */
// The `dns` part of GET /status (content phase): which worker resolves, and per query (host name or SRV name):
// its upstreams, addresses, last good resolution, TTL, next refresh, last error, stale-since. Reads what
// dyups.dns.refresh stores (store/dns.ts, the dns lease); O(queries in use).
import { loadQuery, readQueryIndex } from "../store/dns";
import { DNS_LEASE_NAME } from "./refresh";
import { owner } from "../store/lease";

export function dnsStatus(): unknown {
    const now = ngx.now();
    const index = readQueryIndex();
    const names: unknown[] = [];
    if (index !== undefined) {
        const keys: string[] = [];
        for (const [k] of pairs(index)) keys[keys.length] = k;
        table.sort(keys);
        for (const [, key] of ipairs(keys)) {
            const st = loadQuery(key);
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
                    upstreams: index.get(key),
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
    return { owner: owner(DNS_LEASE_NAME), names };
}
