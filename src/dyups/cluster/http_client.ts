/** @noSelfInFile */
// A small HTTP/1.1 client on cosockets: what the etcd gateway needs, nothing more (Debian ships no
// lua-resty-http). One request per call (`request`: the whole body), or a response read piece by piece
// (`open`: the watch stream, which never ends). Content-Length, chunked and close-delimited bodies; a
// keepalive pool per worker (nginx's cosocket pool, keyed by host:port); connect/send/read timeouts.
//
// Reading: one buffer per connection filled by receiveany, so a read timeout consumes nothing and the body
// state machine (chunk size line, data, CRLF, trailers) resumes where it stopped: a long-poll reader can
// wait with a short timeout and try again without losing bytes.
//
// Errors are returned: Result<T> (errors.ts) where nothing else matters, and for requests HttpResult<T>, a
// Result with a third value on failure, `[undefined, reason, sent]`, where `sent` says whether the request
// may have reached the server (false: the connection could not be made, nothing was sent; true: it was
// sent, or partly sent, and the answer is unknown). A pooled connection that the server had closed while
// idle fails before any byte of an answer: that request is retried once on a new connection (the server
// never saw it).
// Phases: those that allow cosockets (content, timer, rewrite, access). Owns no shm keys.
import { Result } from "../errors";
// Cost: one string concatenation per receive; the buffer is trimmed as it is consumed.

export interface HttpTarget {
    host: string;
    port: number;
}

export interface HttpRequest {
    method: string;
    path: string;
    /** extra request headers (Host, Content-Length and Connection are set here) */
    headers?: LuaTable<string, string>;
    body?: string;
    /** milliseconds */
    connectTimeout: number;
    sendTimeout: number;
    readTimeout: number;
    /** return the connection to the pool after a complete answer (default true) */
    keepalive?: boolean;
    /** refuse bodies larger than this (bytes, default 256 MB) */
    maxBody?: number;
}

export interface HttpResponse {
    status: number;
    /** header names in lower case; repeated headers joined with ", " */
    headers: LuaTable<string, string>;
    body: string;
}

type BodyMode = "length" | "chunked" | "close" | "none";
type ChunkState = "size" | "data" | "crlf" | "trailer" | "done";

/** One connection with its read buffer and the state of the body being read. */
interface Conn {
    sock: NgxTcpSocket;
    buf: string;
    /** next unread byte of buf (1-based) */
    pos: number;
    mode: BodyMode;
    /** bytes left: of the body (length), of the current chunk (chunked) */
    remaining: number;
    chunk: ChunkState;
    /** the body has been read to its end */
    done: boolean;
    /** the peer closed the connection */
    eof: boolean;
}

/** An answer whose body is read piece by piece. */
export interface HttpStream {
    status: number;
    headers: LuaTable<string, string>;
    conn: Conn;
}

export const MAX_LINE = 65536;
const RECV = 65536;
const DEFAULT_MAX_BODY = 256 * 1024 * 1024;
/** keepalive pool: idle time (ms) and connections per host:port and worker */
const POOL_IDLE = 60000;
const POOL_SIZE = 32;

/** Failure with the `sent` flag (see the header). */
type Failed = LuaMultiReturn<[undefined, string, boolean]>;
export type HttpResult<T> = LuaMultiReturn<[T, undefined, undefined] | [undefined, string, boolean]>;

function unread(c: Conn): number {
    return c.buf.length - c.pos + 1;
}

/** Reads more bytes into the buffer. Returns an error ("timeout", "closed", ...) or undefined. */
function fill(c: Conn): string | undefined {
    if (c.eof) return "closed";
    const [data, err] = c.sock.receiveany(RECV);
    if (data === undefined) {
        if (err === "closed") c.eof = true;
        return err ?? "closed";
    }
    if (c.pos > c.buf.length) c.buf = data;
    else c.buf = string.sub(c.buf, c.pos) + data;
    c.pos = 1;
    return undefined;
}

/** One line without its CRLF (a bare LF is accepted). Consumes nothing unless the whole line is there. */
function readLine(c: Conn): Result<string> {
    for (;;) {
        const [nl] = string.find(c.buf, "\n", c.pos, true);
        if (nl !== undefined) {
            let last = nl - 1;
            if (last >= c.pos && string.byte(c.buf, last) === 13) last = last - 1;
            const line = string.sub(c.buf, c.pos, last);
            c.pos = nl + 1;
            return $multi(line, undefined);
        }
        if (unread(c) > MAX_LINE) return $multi(undefined, "line too long");
        const err = fill(c);
        if (err !== undefined) return $multi(undefined, err);
    }
}

/** Up to max bytes that are already buffered or arrive with the next receive (never more than max). */
function take(c: Conn, max: number): Result<string> {
    if (unread(c) === 0) {
        const err = fill(c);
        if (err !== undefined) return $multi(undefined, err);
    }
    const n = math.min(unread(c), max);
    const out = string.sub(c.buf, c.pos, c.pos + n - 1);
    c.pos = c.pos + n;
    return $multi(out, undefined);
}

/** "1a;ext=1" -> 26; undefined when not a chunk size. */
export function parseChunkSize(line: string): number | undefined {
    const [hex] = string.match(line, "^%s*(%x+)%s*;?");
    if (hex === undefined || hex.length > 12) return undefined;
    return tonumber(hex, 16);
}

/**
 * The next piece of the body: a non-empty string, "" at the end of the body, or [undefined, error]
 * ("timeout" leaves the state as it was: call again).
 */
function readPiece(c: Conn): Result<string> {
    for (;;) {
        if (c.done) return $multi("", undefined);
        if (c.mode === "none") {
            c.done = true;
        } else if (c.mode === "length") {
            if (c.remaining <= 0) {
                c.done = true;
            } else {
                const [data, err] = take(c, c.remaining);
                if (data === undefined) return $multi(undefined, err === "closed" ? "connection closed before the end of the body" : err);
                c.remaining = c.remaining - data.length;
                return $multi(data, undefined);
            }
        } else if (c.mode === "close") {
            const [data, err] = take(c, RECV);
            if (data === undefined) {
                if (err !== "closed") return $multi(undefined, err);
                c.done = true;
            } else {
                return $multi(data, undefined);
            }
        } else if (c.chunk === "size") {
            const [line, err] = readLine(c);
            if (line === undefined) return $multi(undefined, err === "closed" ? "connection closed inside a chunked body" : err);
            const size = parseChunkSize(line);
            if (size === undefined) return $multi(undefined, `bad chunk size line "${string.sub(line, 1, 40)}"`);
            if (size === 0) c.chunk = "trailer";
            else {
                c.remaining = size;
                c.chunk = "data";
            }
        } else if (c.chunk === "data") {
            const [data, err] = take(c, c.remaining);
            if (data === undefined) return $multi(undefined, err === "closed" ? "connection closed inside a chunk" : err);
            c.remaining = c.remaining - data.length;
            if (c.remaining === 0) c.chunk = "crlf";
            return $multi(data, undefined);
        } else if (c.chunk === "crlf") {
            const [line, err] = readLine(c);
            if (line === undefined) return $multi(undefined, err === "closed" ? "connection closed inside a chunked body" : err);
            if (line !== "") return $multi(undefined, "missing CRLF after a chunk");
            c.chunk = "size";
        } else {
            // trailer fields until the empty line
            const [line, err] = readLine(c);
            if (line === undefined) return $multi(undefined, err === "closed" ? "connection closed inside the trailer" : err);
            if (line === "") {
                c.chunk = "done";
                c.done = true;
            }
        }
    }
}

function buildRequest(t: HttpTarget, r: HttpRequest): string {
    const parts: string[] = [`${r.method} ${r.path} HTTP/1.1\r\nHost: ${t.host}:${t.port}\r\n`];
    let n = 1;
    if (r.body !== undefined || r.method === "POST" || r.method === "PUT") {
        n = n + 1;
        parts[n - 1] = `Content-Length: ${(r.body ?? "").length}\r\n`;
    }
    if (r.keepalive === false) {
        n = n + 1;
        parts[n - 1] = "Connection: close\r\n";
    }
    if (r.headers !== undefined) {
        for (const [k, v] of pairs(r.headers)) {
            n = n + 1;
            parts[n - 1] = `${k}: ${v}\r\n`;
        }
    }
    n = n + 1;
    parts[n - 1] = "\r\n";
    if (r.body !== undefined) parts[n] = r.body;
    return table.concat(parts);
}

/** Status line and headers; sets the body mode. [status, headers] or [undefined, error, anyByteRead]. */
function readHead(c: Conn, method: string): LuaMultiReturn<[number, LuaTable<string, string>, undefined] | [undefined, string, boolean]> {
    let line: string | undefined;
    let err: string | undefined;
    let status = 0;
    // 1xx answers (100 Continue) come before the real one
    for (;;) {
        [line, err] = readLine(c);
        if (line === undefined) return $multi(undefined, err as string, c.buf.length > 0);
        const [code] = string.match(line, "^HTTP/%d%.%d (%d%d%d)");
        if (code === undefined) return $multi(undefined, `bad status line "${string.sub(line, 1, 60)}"`, true);
        status = tonumber(code) as number;
        const headers: LuaTable<string, string> = new LuaTable();
        for (;;) {
            [line, err] = readLine(c);
            if (line === undefined) return $multi(undefined, `cannot read the headers: ${err}`, true);
            if (line === "") break;
            const [k, v] = string.match(line, "^([^:%s]+)%s*:%s*(.-)%s*$");
            if (k === undefined) return $multi(undefined, `bad header line "${string.sub(line, 1, 60)}"`, true);
            const key = string.lower(k);
            const old = headers.get(key);
            headers.set(key, old === undefined ? (v as string) : `${old}, ${v as string}`);
        }
        if (status >= 200 || status < 100) {
            const te = headers.get("transfer-encoding");
            const cl = headers.get("content-length");
            if (method === "HEAD" || status === 204 || status === 304) c.mode = "none";
            else if (te !== undefined && string.find(string.lower(te), "chunked", 1, true)[0] !== undefined) {
                c.mode = "chunked";
                c.chunk = "size";
            } else if (cl !== undefined) {
                const len = tonumber(cl);
                if (len === undefined || len < 0 || math.floor(len) !== len) return $multi(undefined, `bad Content-Length "${cl}"`, true);
                c.mode = "length";
                c.remaining = len;
            } else c.mode = "close";
            return $multi(status, headers, undefined);
        }
    }
}

function keepAliveAllowed(h: LuaTable<string, string>, c: Conn): boolean {
    const conn = h.get("connection");
    if (conn !== undefined && string.find(string.lower(conn), "close", 1, true)[0] !== undefined) return false;
    return c.mode !== "close" && !c.eof && unread(c) === 0;
}

/** Connects, sends, reads the head. Retries once when a pooled connection turns out to be closed. */
function start(t: HttpTarget, r: HttpRequest): LuaMultiReturn<[HttpStream, undefined, undefined] | [undefined, string, boolean]> {
    const text = buildRequest(t, r);
    for (let attempt = 1; attempt <= 2; attempt++) {
        const sock = ngx.socket.tcp();
        sock.settimeouts(r.connectTimeout, r.sendTimeout, r.readTimeout);
        const [ok, cerr] = sock.connect(t.host, t.port);
        if (ok === undefined) return $multi(undefined, `cannot connect to ${t.host}:${t.port}: ${cerr}`, false);
        const [reused] = sock.getreusedtimes();
        const c: Conn = { sock, buf: "", pos: 1, mode: "none", remaining: 0, chunk: "size", done: false, eof: false };
        const [sent, serr] = sock.send(text);
        if (sent === undefined) {
            sock.close();
            if (attempt === 1 && reused !== undefined && reused > 0) continue;
            return $multi(undefined, `cannot send to ${t.host}:${t.port}: ${serr}`, true);
        }
        const [status, headers, gotBytes] = readHead(c, r.method);
        if (status === undefined) {
            sock.close();
            const herr = tostring(headers);
            if (attempt === 1 && reused !== undefined && reused > 0 && gotBytes !== true && herr !== "timeout") continue;
            return $multi(undefined, `no answer from ${t.host}:${t.port}: ${herr}`, true);
        }
        return $multi({ status, headers: headers as LuaTable<string, string>, conn: c }, undefined, undefined);
    }
    return $multi(undefined, "unreachable", true) as Failed;
}

/**
 * One request, the whole answer. Returns the response (any HTTP status), or [undefined, reason, sent].
 */
export function request(t: HttpTarget, r: HttpRequest): HttpResult<HttpResponse> {
    const [s, err, sent] = start(t, r);
    if (s === undefined) return $multi(undefined, err as string, sent as boolean);
    const c = s.conn;
    const max = r.maxBody ?? DEFAULT_MAX_BODY;
    const parts: string[] = [];
    let n = 0;
    let size = 0;
    for (;;) {
        const [piece, perr] = readPiece(c);
        if (piece === undefined) {
            c.sock.close();
            return $multi(undefined, `cannot read the answer of ${t.host}:${t.port}: ${perr}`, true);
        }
        if (piece === "") break;
        size = size + piece.length;
        if (size > max) {
            c.sock.close();
            return $multi(undefined, `the answer of ${t.host}:${t.port} is larger than ${max} bytes`, true);
        }
        n = n + 1;
        parts[n - 1] = piece;
    }
    if (r.keepalive !== false && keepAliveAllowed(s.headers, c)) c.sock.setkeepalive(POOL_IDLE, POOL_SIZE);
    else c.sock.close();
    return $multi({ status: s.status, headers: s.headers, body: n === 1 ? parts[0] : table.concat(parts) }, undefined, undefined);
}

/** Sends a request and reads the head; the body is then read with readStream. The connection is never pooled. */
export function open(t: HttpTarget, r: HttpRequest): HttpResult<HttpStream> {
    r.keepalive = false;
    return start(t, r);
}

/** The next piece of a stream's body: non-empty data, "" at its end, or [undefined, error] ("timeout": try again). */
export function readStream(s: HttpStream): Result<string> {
    return readPiece(s.conn);
}

/** Sets the read timeout (ms) of a stream. */
export function streamTimeout(s: HttpStream, ms: number): void {
    s.conn.sock.settimeouts(ms, ms, ms);
}

export function closeStream(s: HttpStream): void {
    s.conn.sock.close();
}
