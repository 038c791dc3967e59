/** @noSelfInFile */
// A server's check configuration and the identity of its health state. Pure (ngx.md5 only): tested under
// plain LuaJIT with the fake ngx.
//
// The state of a checked peer is keyed by its address AND its check configuration: two upstreams that list
// the same address with the same `check` lines share one state and one probe; any difference in what a
// probe sends, expects, or how often and how strictly it counts (type, port, interval, timeout, rise, fall,
// check_http_send, check_http_expect_alive, check_keepalive_requests) gives a separate state (the module
// shares one state per address + send string, whatever the rest: reference §6.4). default_down is not part
// of the identity: it only says how a state that does not exist yet starts.
import { CheckSpec } from "../model";

/** The module's default request for type=http (also used for an empty check_http_send: reference §6.3). */
export const DEFAULT_HTTP_SEND = "GET / HTTP/1.0\r\n\r\n";

/** A check spec with every default filled in, plus its identity. Built once per upstream version. */
export interface CheckConfig {
    type: CheckSpec["type"];
    interval: number;
    rise: number;
    fall: number;
    timeout: number;
    defaultDown: boolean;
    /** 0 = the server's own port */
    port: number;
    /** what type=http sends */
    send: string;
    /** alive[c] for the status class c = 2..5 */
    alive2: boolean;
    alive3: boolean;
    alive4: boolean;
    alive5: boolean;
    /** the expect mask as written by the module's bits: 2xx=2, 3xx=4, 4xx=8, 5xx=16 */
    mask: number;
    keepaliveRequests: number;
    /** hex digest of the canonical text: the configuration part of a state key */
    id: string;
}

const CLASS_BIT: LuaTable<string, number> = new LuaTable();
CLASS_BIT.set("http_2xx", 2);
CLASS_BIT.set("http_3xx", 4);
CLASS_BIT.set("http_4xx", 8);
CLASS_BIT.set("http_5xx", 16);

/** The canonical text of what makes two checks the same (see the header). */
export function canonical(c: CheckConfig): string {
    return `${c.type} port=${c.port} interval=${c.interval} timeout=${c.timeout} rise=${c.rise} fall=${c.fall} keepalive=${c.keepaliveRequests} expect=${c.mask} send=${c.type === "http" ? c.send : ""}`;
}

/** Fills in the module's defaults. O(1). */
export function resolveCheck(spec: CheckSpec): CheckConfig {
    let mask = 0;
    const ea = spec.expectAlive;
    if (ea === undefined || ea.length === 0) {
        mask = 2 + 4;
    } else {
        for (const [, v] of ipairs(ea)) {
            const bit = CLASS_BIT.get(v) ?? 0;
            if (math.floor(mask / bit) % 2 === 0) mask = mask + bit;
        }
    }
    const send = spec.httpSend === undefined || spec.httpSend === "" ? DEFAULT_HTTP_SEND : spec.httpSend;
    const c: CheckConfig = {
        type: spec.type,
        interval: spec.interval,
        rise: spec.rise,
        fall: spec.fall,
        timeout: spec.timeout,
        defaultDown: spec.defaultDown,
        port: spec.port,
        send,
        alive2: math.floor(mask / 2) % 2 === 1,
        alive3: math.floor(mask / 4) % 2 === 1,
        alive4: math.floor(mask / 8) % 2 === 1,
        alive5: math.floor(mask / 16) % 2 === 1,
        mask,
        keepaliveRequests: spec.keepaliveRequests ?? 1,
        id: "",
    };
    // 64 bits of md5 are plenty to keep a handful of configurations per address apart
    c.id = string.sub(ngx.md5(canonical(c)), 1, 16);
    return c;
}

/** Whether an HTTP status counts as alive for this check (a status outside 200..599 never does). */
export function statusAlive(c: CheckConfig, status: number): boolean {
    if (status < 200 || status > 599) return false;
    const cls = math.floor(status / 100);
    if (cls === 2) return c.alive2;
    if (cls === 3) return c.alive3;
    if (cls === 4) return c.alive4;
    return c.alive5;
}

/** The identity of a checked peer's state: configuration id + "/" + peer address (host:port, [v6]:port, unix:path). */
export function stateId(c: CheckConfig, peerAddr: string): string {
    return `${c.id}/${peerAddr}`;
}
