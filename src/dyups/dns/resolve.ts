/** @noSelfInFile */
// Turning server directives into endpoints when a body is applied. IPs and unix sockets are themselves;
// names are looked up in /etc/hosts, then (only where the phase may yield: content, timer) with the
// non-blocking DNS client (A, else AAAA; `service=`: SRV, then the targets). Never blocks a worker, never
// runs on the request path. dyups.dns.refresh re-resolves with the same lookups (lookupA, lookupSrv).
// A name that cannot be resolved: with `resolve` the server is kept with no endpoints (unavailable until
// the DNS timer resolves it); without `resolve` the body is refused, as nginx refuses such a config.
// Where the phase cannot yield (init, init_worker), names are left unresolved for the DNS timer.
import { noteDnsQuery } from "../metrics/hooks";
import { Endpoint, Result, UpstreamSpec } from "../model";
import { getOptions } from "../options";
import { QueryState, serverEndpoints, srvName, srvTargets } from "./policy";

interface DnsModule {
    ["new"](this: DnsModule, opts: object): LuaMultiReturn<[RestyDns.Resolver | undefined, string | undefined]>;
    TYPE_A: number;
    TYPE_AAAA: number;
    TYPE_SRV: number;
}

let dnsModule: DnsModule | undefined | false;
/** OpenResty ships resty.dns.resolver; Debian installs the same module as nginx.dns.resolver. */
export function dnsClient(): DnsModule | undefined {
    if (dnsModule === undefined) {
        let [ok, m] = pcall(require, "resty.dns.resolver");
        if (!ok) [ok, m] = pcall(require, "nginx.dns.resolver");
        dnsModule = ok ? (m as DnsModule) : false;
    }
    return dnsModule === false ? undefined : dnsModule;
}

let hostsCache: LuaTable<string, string[]> | undefined;
let hostsRead = 0;
/** /etc/hosts, re-read at most every 5 s: name (lowercase) -> addresses in file order. */
export function hostsLookup(name: string): string[] | undefined {
    const now = ngx.now();
    if (hostsCache === undefined || now - hostsRead > 5) {
        hostsRead = now;
        const t: LuaTable<string, string[]> = new LuaTable();
        const [f] = io.open("/etc/hosts", "r");
        if (f !== undefined) {
            for (const [line] of f.lines()) {
                const [body] = string.gsub(line, "#.*$", "");
                let addr: string | undefined;
                for (const [word] of string.gmatch(body, "%S+")) {
                    if (addr === undefined) addr = word;
                    else {
                        const key = string.lower(word);
                        let list = t.get(key);
                        if (list === undefined) {
                            list = [];
                            t.set(key, list);
                        }
                        list[list.length] = addr;
                    }
                }
            }
            f.close();
        }
        hostsCache = t;
    }
    return hostsCache.get(string.lower(name));
}

let resolvConf: string[] | undefined;
/** Nameservers: the `resolver` option, else /etc/resolv.conf. Entries "ip" or "ip:port" / "[v6]:port". */
export function nameservers(): (string | [string, number])[] {
    const out: (string | [string, number])[] = [];
    let list = getOptions().resolver;
    if (list === undefined) {
        if (resolvConf === undefined) {
            resolvConf = [];
            const [f] = io.open("/etc/resolv.conf", "r");
            if (f !== undefined) {
                for (const [line] of f.lines()) {
                    const [ns] = string.match(line, "^%s*nameserver%s+([^%s]+)");
                    if (ns !== undefined) resolvConf[resolvConf.length] = ns;
                }
                f.close();
            }
        }
        list = resolvConf;
    }
    for (const [, ns] of ipairs(list)) {
        let [h, p] = string.match(ns, "^%[(.+)%]:(%d+)$");
        if (h === undefined) [h, p] = string.match(ns, "^([%d%.]+):(%d+)$");
        const entry: string | [string, number] = h !== undefined ? [h, tonumber(p) as number] : ns;
        out[out.length] = entry;
    }
    return out;
}

/** A DNS client object on the configured nameservers (cosockets: content and timer phases), or the reason. */
function newResolver(): LuaMultiReturn<[RestyDns.Resolver | undefined, string | undefined, DnsModule | undefined]> {
    const dns = dnsClient();
    if (dns === undefined) return $multi(undefined, "no DNS client (resty.dns.resolver) installed", undefined);
    const servers = nameservers();
    if (servers.length === 0) return $multi(undefined, "no nameservers (set the resolver option)", undefined);
    const [r, err] = dns.new({ nameservers: servers, retrans: 2, timeout: getOptions().dns_timeout * 1000 });
    if (r === undefined) return $multi(undefined, `cannot create resolver: ${err}`, undefined);
    return $multi(r, undefined, dns);
}

/**
 * The SRV records of `name` (e.g. "_http._tcp.api.local"), as the client returns them, with the TYPE_SRV
 * constant to pick them out. Yields: content and timer phases only. Errors as queryName's.
 */
export function querySrv(name: string): LuaMultiReturn<[RestyDns.DnsAnswers, number, undefined] | [undefined, undefined, string]> {
    const [answers, typeSrv, err] = sendSrvQuery(name);
    noteDnsQuery(err); // metrics: DNS queries by result
    return $multi(answers, typeSrv, err) as LuaMultiReturn<[RestyDns.DnsAnswers, number, undefined] | [undefined, undefined, string]>;
}

function sendSrvQuery(name: string): LuaMultiReturn<[RestyDns.DnsAnswers, number, undefined] | [undefined, undefined, string]> {
    const [r, err, dns] = newResolver();
    if (r === undefined || dns === undefined) return $multi(undefined, undefined, err as string);
    const [answers, qerr] = r.query(name, { qtype: dns.TYPE_SRV });
    if (answers === undefined) return $multi(undefined, undefined, qerr ?? "query failed");
    if (answers.errcode !== undefined) {
        if (answers.errcode === 3) return $multi(undefined, undefined, "nxdomain");
        return $multi(undefined, undefined, `dns error ${answers.errcode}: ${answers.errstr}`);
    }
    return $multi(answers, dns.TYPE_SRV, undefined);
}

export interface Answer {
    addrs: string[];
    ttl: number;
}

/**
 * Resolves a name to addresses (A, then AAAA when there is no A) with the DNS client. Yields (cosockets):
 * content and timer phases only. Returns the addresses and the smallest TTL, or an error: "nxdomain",
 * "no addresses", or the client's error ("timeout", "connection refused", "server failure"...).
 */
export function queryName(name: string): LuaMultiReturn<[Answer, undefined] | [undefined, string]> {
    const [ans, err] = sendNameQuery(name);
    noteDnsQuery(err); // metrics: DNS queries by result
    return $multi(ans, err) as LuaMultiReturn<[Answer, undefined] | [undefined, string]>;
}

function sendNameQuery(name: string): LuaMultiReturn<[Answer, undefined] | [undefined, string]> {
    const [r, err, dns] = newResolver();
    if (r === undefined || dns === undefined) return $multi(undefined, err as string);
    let lastErr = "no addresses";
    for (const qtype of [dns.TYPE_A, dns.TYPE_AAAA]) {
        const [answers, qerr] = r.query(name, { qtype });
        if (answers === undefined) return $multi(undefined, qerr ?? "query failed");
        if (answers.errcode !== undefined) {
            if (answers.errcode === 3) return $multi(undefined, "nxdomain");
            return $multi(undefined, `dns error ${answers.errcode}: ${answers.errstr}`);
        }
        const addrs: string[] = [];
        let ttl = math.huge;
        for (const [, a] of ipairs(answers)) {
            if (a.address !== undefined && (a.type === dns.TYPE_A || a.type === dns.TYPE_AAAA)) {
                addrs[addrs.length] = a.address;
                if (a.ttl < ttl) ttl = a.ttl;
            }
        }
        if (addrs.length > 0) return $multi({ addrs, ttl }, undefined);
        lastErr = "no addresses";
    }
    return $multi(undefined, lastErr);
}

/** Answers from /etc/hosts are re-read every 5 s (hostsLookup): that is their TTL. */
const HOSTS_TTL = 5;

/** Addresses of one name (port 0) and their TTL: /etc/hosts first, then DNS. Yields: content and timer phases. */
export function lookupA(host: string): LuaMultiReturn<[Endpoint[], number | undefined, undefined] | [undefined, undefined, string]> {
    const eps: Endpoint[] = [];
    const hosts = hostsLookup(host);
    if (hosts !== undefined) {
        for (const [i, a] of ipairs(hosts)) eps[i - 1] = { host: a, port: 0 };
        return $multi(eps, HOSTS_TTL, undefined);
    }
    const [ans, err] = queryName(host);
    if (ans === undefined) return $multi(undefined, undefined, err as string);
    for (const [i, a] of ipairs(ans.addrs)) eps[i - 1] = { host: a, port: 0 };
    return $multi(eps, ans.ttl, undefined);
}

/**
 * The SRV records of `name` (best priority only), then the addresses of their targets: endpoints with the
 * records' ports and weights, and the smallest TTL. A target that does not resolve is left out. Yields.
 */
export function lookupSrv(name: string): LuaMultiReturn<[Endpoint[], number | undefined, undefined] | [undefined, undefined, string]> {
    const [answers, typeSrv, err] = querySrv(name);
    if (answers === undefined) return $multi(undefined, undefined, err as string);
    const [targets, srvTtl] = srvTargets(answers, typeSrv as number);
    let ttl = srvTtl;
    const eps: Endpoint[] = [];
    let n = 0;
    let lastErr = "no addresses";
    for (const [, t] of ipairs(targets)) {
        const [addrs, tttl, terr] = lookupA(t.target);
        if (addrs === undefined) {
            lastErr = `target ${t.target}: ${terr}`;
        } else {
            if (tttl !== undefined && (ttl === undefined || tttl < ttl)) ttl = tttl;
            for (const [, a] of ipairs(addrs)) {
                n = n + 1;
                eps[n - 1] = { host: a.host, port: t.port, weight: t.weight };
            }
        }
    }
    if (n === 0) return $multi(undefined, undefined, targets.length === 0 ? "no SRV records" : lastErr);
    return $multi(eps, ttl, undefined);
}

/**
 * Endpoints for every server of a spec (endpoints[i] for servers[i]). `yieldable`: the phase may use
 * cosockets. Errors name the server: `host not found in upstream "x.invalid:80" (nxdomain)`.
 */
export function resolveEndpoints(spec: UpstreamSpec, yieldable: boolean): Result<Endpoint[][]> {
    const out: Endpoint[][] = [];
    for (const [i, s] of ipairs(spec.servers)) {
        const eps: Endpoint[] = [];
        if (s.kind === "name" && s.service === undefined) {
            let addrs = hostsLookup(s.host);
            let err: string | undefined;
            if (addrs === undefined && yieldable) {
                const [ans, qerr] = queryName(s.host);
                if (ans !== undefined) addrs = ans.addrs;
                err = qerr;
            }
            if (addrs !== undefined) {
                for (const [, a] of ipairs(addrs)) {
                    eps[eps.length] = { host: a, port: s.port };
                }
            } else if (yieldable && !s.resolve) {
                return $multi(undefined, `host not found in upstream "${s.addr}" in server ${s.index} (${err})`);
            }
        } else if (s.kind === "name") {
            // service= (always with resolve): the SRV answer, if the phase allows; else the DNS timer fills it
            if (yieldable) {
                const [srv] = lookupSrv(srvName(s.host, s.service as string));
                if (srv !== undefined) {
                    const st: QueryState = { q: s.host, kind: "srv", eps: srv, next: 0, fails: 0 };
                    for (const [, e] of ipairs(serverEndpoints(s, st) ?? [])) eps[eps.length] = e;
                }
            }
        } else {
            eps[0] = { host: s.host, port: s.port };
        }
        out[i - 1] = eps;
    }
    return $multi(out, undefined);
}
