/** @noSelfInFile */
// The small counting hooks other modules call (none on the request path): writes by result (pipeline.ts),
// DNS queries by result (dns/resolve.ts), and switching per-request counting on in each worker
// (startup.ts). They count straight into the metrics dict (store/metrics.ts): one incr per event.
import { getOptions } from "../options";
import { setCounting } from "./counters";
import { countDns, countWrite, metricsDict } from "../store/metrics";

/** init_worker: per-request counting is on when the `metrics` option is and the metrics dict exists. */
export function startCounting(): void {
    const o = getOptions();
    const on = o.metrics && metricsDict() !== undefined;
    setCounting(on);
    if (o.metrics && !on && ngx.worker.id() === 0) {
        ngx.log(ngx.WARN, "dyups: lua_shared_dict \"", o.metrics_dict, "\" is not declared: GET /metrics shows no ",
            "traffic counters (include nginx/dyups.conf, or declare it, or set init({ metrics = false }))");
    }
}

/** A write through the pipeline (interface, Lua API) answered `status` (200 when it was applied). */
export function noteWrite(status: number): void {
    countWrite(status);
}

/** The result label of a DNS query's outcome: err undefined = "ok", else what kind of failure. */
export function dnsResult(err: string | undefined): string {
    if (err === undefined) return "ok";
    if (err === "nxdomain") return "nxdomain";
    if (err === "no addresses" || err === "no SRV records") return "no_addresses";
    const e = string.lower(err);
    if (string.find(e, "timeout", 1, true)[0] !== undefined) return "timeout";
    if (string.find(e, "refused", 1, true)[0] !== undefined) return "refused";
    if (string.find(e, "server failure", 1, true)[0] !== undefined || string.find(e, "dns error 2:", 1, true)[0] !== undefined) return "servfail";
    return "error";
}

/** A DNS query (A/AAAA or SRV) sent by dyups ended with `err` (undefined: answered). */
export function noteDnsQuery(err: string | undefined): void {
    countDns(dnsResult(err));
}
