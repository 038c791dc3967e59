/** @noSelfInFile */
// One active probe per call, per check type, over a non-blocking cosocket. YIELDS: timer phase only (the
// prober's light threads); never on the request path. What each type sends and accepts:
//   tcp        connect; success = the connection is established (then closed: every probe connects again,
//              so a server that stops accepting is seen at once; the module re-peeks one kept connection)
//   http       check_http_send (default "GET / HTTP/1.0\r\n\r\n"; an empty one sends the default too), read
//              the status line "HTTP/d.d NNN": alive when NNN's class is in check_http_expect_alive. With
//              check_keepalive_requests N > 1 the response is read whole (Content-Length or chunked) and the
//              connection is reused for N requests (a 4xx/5xx answer or "Connection: close" closes it); a
//              reused connection that the server closed meanwhile is retried once on a fresh one
//   ssl_hello  a full TLS handshake (no certificate verification): alive when it completes
//   mysql      read the server greeting: alive when >= 5 bytes arrive and the packet number (byte 4) is 0
//   ajp        send CPING (12 34 00 01 0a): alive when the first 5 bytes are CPONG (41 42 00 01 09)
// `timeout` (ms) bounds connect + send + receive together: each step gets what is left of it.
// Returns "" when alive, else what failed ("check time out", "connect() failed:
// connection refused", "check protocol http error: status 500", "http parse status line error", ...).
import { CheckConfig, statusAlive } from "./config";

const CPING = "\x12\x34\x00\x01\x0a";
const CPONG = "\x41\x42\x00\x01\x09";

export interface ProbeTarget {
    host: string;
    /** the probed port (the check's port= or the server's); 0 for unix: sockets */
    port: number;
    cfg: CheckConfig;
    /** keepalive pool name (per state id: connections of another configuration are never reused) */
    pool: string;
}

type Outcome = LuaMultiReturn<[boolean, string]>;

/**
 * ms left until dl (at least 1). Each probe has its own deadline: probes of several light threads interleave.
 * ngx.now() is the event loop's time, refreshed at every wake-up (each step here follows a yield): ms-accurate
 * without a time update per step.
 */
function remaining(dl: number): number {
    const ms = math.floor((dl - ngx.now()) * 1000);
    return ms < 1 ? 1 : ms;
}

function failed(what: string, err: string | undefined): string {
    if (err === "timeout") return "check time out";
    return `${what} failed: ${err ?? "unknown error"}`;
}

function connect(sock: NgxTcpSocket, t: ProbeTarget, pooled: boolean, dl: number): LuaMultiReturn<[boolean, string]> {
    sock.settimeout(remaining(dl));
    const opts = pooled ? { pool: t.pool } : undefined;
    const [ok, err] = t.port > 0 ? sock.connect(t.host, t.port, opts) : sock.connect(t.host, undefined, opts);
    if (ok === undefined) return $multi(false, failed("connect()", err));
    return $multi(true, "");
}

/** Reads the rest of an HTTP response after its status line; returns whether the connection may be reused. */
function drainHttp(sock: NgxTcpSocket, dl: number): boolean {
    let length = -1;
    let chunked = false;
    let close = false;
    for (;;) {
        sock.settimeout(remaining(dl));
        const [line] = sock.receive("*l");
        if (line === undefined) return false;
        if (line === "") break;
        const [name, value] = string.match(line, "^([^:]+):%s*(.-)%s*$");
        if (name !== undefined && value !== undefined) {
            const n = string.lower(name);
            if (n === "content-length") length = tonumber(value) ?? -1;
            else if (n === "transfer-encoding" && string.find(string.lower(value), "chunked", 1, true)[0] !== undefined) chunked = true;
            else if (n === "connection" && string.lower(value) === "close") close = true;
        }
    }
    if (chunked) {
        for (;;) {
            sock.settimeout(remaining(dl));
            const [sizeLine] = sock.receive("*l");
            if (sizeLine === undefined) return false;
            const size = tonumber(string.match(sizeLine, "^%x+")[0] ?? "", 16);
            if (size === undefined) return false;
            if (size === 0) {
                // trailers until the empty line
                for (;;) {
                    const [tr] = sock.receive("*l");
                    if (tr === undefined) return false;
                    if (tr === "") return !close;
                }
            }
            const [data] = sock.receive(size + 2);
            if (data === undefined) return false;
        }
    }
    if (length < 0) return false; // read until close: not reusable
    if (length > 0) {
        sock.settimeout(remaining(dl));
        const [body] = sock.receive(length);
        if (body === undefined) return false;
    }
    return !close;
}

function probeHttp(t: ProbeTarget, retried: boolean, dl: number): Outcome {
    const cfg = t.cfg;
    const keep = cfg.keepaliveRequests > 1;
    const sock = ngx.socket.tcp();
    const [cok, cerr] = connect(sock, t, keep, dl);
    if (!cok) return $multi(false, cerr);
    const reused = keep ? ((sock.getreusedtimes()[0] as number | undefined) ?? 0) : 0;
    sock.settimeout(remaining(dl));
    const [sent, serr] = sock.send(cfg.send);
    if (sent === undefined) {
        sock.close();
        if (reused > 0 && !retried) return probeHttp(t, true, dl); // the server closed the idle connection
        return $multi(false, failed("send()", serr));
    }
    sock.settimeout(remaining(dl));
    const [line, rerr] = sock.receive("*l");
    if (line === undefined) {
        sock.close();
        if (reused > 0 && !retried && rerr !== "timeout") return probeHttp(t, true, dl);
        return $multi(false, failed("recv()", rerr));
    }
    const [code] = string.match(line, "^HTTP/%d+%.%d+%s+(%d%d%d)");
    if (code === undefined) {
        sock.close();
        return $multi(false, "http parse status line error");
    }
    const status = tonumber(code) as number;
    const alive = statusAlive(cfg, status);
    if (keep && status < 400 && reused + 1 < cfg.keepaliveRequests && drainHttp(sock, dl)) {
        sock.setkeepalive(math.max(cfg.interval * 3, 10000), 1);
    } else {
        sock.close();
    }
    if (!alive) return $multi(false, `check protocol http error: status ${code}`);
    return $multi(true, "");
}

function probeSimple(t: ProbeTarget, dl: number): Outcome {
    const kind = t.cfg.type;
    const sock = ngx.socket.tcp();
    const [cok, cerr] = connect(sock, t, false, dl);
    if (!cok) return $multi(false, cerr);
    let ok = true;
    let reason = "";
    if (kind === "ssl_hello") {
        sock.settimeout(remaining(dl));
        const [session, err] = sock.sslhandshake(false, undefined, false);
        if (session === undefined) {
            ok = false;
            reason = err === "timeout" ? "check time out" : `check protocol ssl_hello error: ${err ?? "handshake failed"}`;
        }
    } else if (kind === "mysql") {
        sock.settimeout(remaining(dl));
        const [data, err] = sock.receive(5);
        if (data === undefined) {
            ok = false;
            reason = err === "timeout" ? "check time out" : `check protocol mysql error: ${err ?? "no greeting"}`;
        } else if (string.byte(data, 4) !== 0) {
            ok = false;
            reason = "check protocol mysql error: packet number is not 0";
        }
    } else if (kind === "ajp") {
        sock.settimeout(remaining(dl));
        const [sent, serr] = sock.send(CPING);
        if (sent === undefined) {
            ok = false;
            reason = failed("send()", serr);
        } else {
            sock.settimeout(remaining(dl));
            const [data, err] = sock.receive(5);
            if (data === undefined) {
                ok = false;
                reason = err === "timeout" ? "check time out" : `check protocol ajp error: ${err ?? "no answer"}`;
            } else if (data !== CPONG) {
                ok = false;
                reason = "check protocol ajp error: not a CPONG";
            }
        }
    }
    sock.close();
    return $multi(ok, reason);
}

/** Runs one probe of target t: "" when alive, else the reason. YIELDS (cosockets). Never raises for a network failure. */
export function probeYielding(t: ProbeTarget): string {
    const dl = ngx.now() + t.cfg.timeout / 1000;
    const [alive, reason] = t.cfg.type === "http" ? probeHttp(t, false, dl) : probeSimple(t, dl);
    if (alive) return "";
    return reason === "" ? "failed" : reason;
}
