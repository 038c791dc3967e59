/** @noSelfInFile */
// The listing views of the interface: GET /list and GET /detail, plain (the original module's bytes) and
// JSON (?format=json), and the formatting of one upstream that GET /upstream/NAME shares.
//
// Large answers are streamed: the body is built and sent in pieces of about CHUNK bytes (or ITEMS
// upstreams); after each piece the handler waits until the client took it (ngx.flush(true)), and after every
// half millisecond of work it yields (dyups.pace), so a 10 MB /detail does not hold the worker's event loop:
// requests on the same worker are served meanwhile. An answer that fits in one piece is sent whole with a
// Content-Length, as before; a streamed one goes chunked (HTTP/1.1) or until the connection closes (HTTP/1.0). The upstreams come
// from this worker's registry in creation order (registry/order.ts: no listing of the dict's keys), each
// record read from the store when its turn comes: a write made while a long answer streams may or may not
// show in it, but each upstream's block is whole.
// Pagination (JSON views): ?limit=N (1..100000) answers at most N upstreams and adds "next": the name to
// pass as ?after= for the following page. ?after=NAME starts after NAME (also after a NAME deleted since
// the previous page, until its place is compacted away; else 400).
// Phase: content.
import * as cjson from "cjson.safe";
import { recordHealth } from "../health/status";
import { UpstreamRecord } from "../model";
import { validateName } from "../parse/upstream";
import { revisionOf } from "../pipeline";
import { endpointId } from "../registry/build";
import * as order from "../registry/order";
import { record } from "../registry/sync";
import { newPacer, pace, Pacer } from "../pace";

/** bytes per piece of a streamed answer */
const CHUNK = 32768;
/** upstreams per piece at most (their records are read and formatted between yields) */
const ITEMS = 64;
const MAX_LIMIT = 100000;

/** The address /detail shows for a server directive: its first endpoint, else the address as written. */
function shownAddr(rec: UpstreamRecord, i: number): string {
    const eps = rec.endpoints[i - 1];
    const e = eps !== undefined ? eps[0] : undefined;
    if (e === undefined) return rec.spec.servers[i - 1].addr;
    return endpointId(e);
}

/** Appends the lines of REC's servers to OUT: /detail's (full) or /upstream/NAME's. */
export function detailLines(rec: UpstreamRecord, full: boolean, out: string[]): void {
    let n = out.length;
    for (const [i, s] of ipairs(rec.spec.servers)) {
        n = n + 1;
        if (full) {
            out[n - 1] = `server ${shownAddr(rec, i)} weight=${s.weight} max_conns=${s.maxConns} max_fails=${s.maxFails} fail_timeout=${math.floor(s.failTimeout)} backup=${s.backup ? 1 : 0} down=${s.down ? 1 : 0}\n`;
        } else {
            out[n - 1] = `server ${shownAddr(rec, i)}\n`;
        }
    }
}

/** The JSON form of one upstream. */
export function recordJson(rec: UpstreamRecord): unknown {
    const servers: unknown[] = [];
    for (const [i, s] of ipairs(rec.spec.servers)) {
        const eps = rec.endpoints[i - 1] ?? [];
        const addrs: string[] = [];
        for (const [, e] of ipairs(eps)) {
            addrs[addrs.length] = endpointId(e);
        }
        servers[i - 1] = {
            addr: s.addr, resolved: addrs, weight: s.weight, max_conns: s.maxConns, max_fails: s.maxFails,
            fail_timeout: s.failTimeout, backup: s.backup, down: s.down, resolve: s.resolve,
            health: rec.spec.check !== undefined ? recordHealth(rec, i) : undefined,
        };
    }
    return { name: rec.display ?? rec.name, revision: revisionOf(rec), method: rec.spec.method, hash_key: rec.spec.hashKey,
        balancer: rec.spec.picker, keepalive: rec.spec.keepalive, servers, body: rec.body };
}

/** An answer being streamed. */
interface Stream {
    contentType?: string;
    buf: string[];
    n: number;
    size: number;
    items: number;
    /** headers sent (the answer is streamed) */
    started: boolean;
    /** the client went away */
    closed: boolean;
    pacer: Pacer;
    /** st.size at the last item */
    mark: number;
}

function newStream(contentType?: string): Stream {
    return { contentType, buf: [], n: 0, size: 0, items: 0, started: false, closed: false, pacer: newPacer(), mark: 0 };
}

function headers(st: Stream, length?: number): void {
    ngx.status = 200;
    // No Content-Type for the plain views, like the original module (clearing it keeps nginx's default_type off).
    ngx.header["Content-Type"] = st.contentType;
    ngx.header["Content-Length"] = length !== undefined ? `${length}` : undefined;
    ngx.send_headers();
    st.started = true;
}

/** Sends what is buffered, waits until the client took it, and lets the worker serve others. */
function sendPiece(st: Stream): void {
    if (!st.started) headers(st);
    const [ok] = ngx.print(table.concat(st.buf, "", 1, st.n));
    st.buf = [];
    st.n = 0;
    st.size = 0;
    st.items = 0;
    if (ok === undefined) {
        st.closed = true;
        return;
    }
    ngx.flush(true);
}

function put(st: Stream, s: string): void {
    st.n = st.n + 1;
    st.buf[st.n - 1] = s;
    st.size = st.size + s.length;
}

/** One upstream done: send a piece when enough is buffered; let others run after a slice of work. */
function item(st: Stream): void {
    st.items = st.items + 1;
    const bytes = st.size - st.mark;
    if (st.size >= CHUNK || st.items >= ITEMS) sendPiece(st);
    st.mark = st.size;
    pace(st.pacer, bytes);
}

/** Ends the answer: whole with a Content-Length when it never streamed. */
function finish(st: Stream): void {
    if (st.closed) return;
    if (!st.started) {
        const body = table.concat(st.buf, "", 1, st.n);
        headers(st, body.length);
        if (body !== "") ngx.print(body);
    } else if (st.n > 0) {
        ngx.print(table.concat(st.buf, "", 1, st.n));
    }
    ngx.exit(ngx.HTTP_OK);
}

/** A 400 for bad pagination parameters. */
function badRequest(reason: string): void {
    ngx.status = 400;
    ngx.header["Content-Type"] = undefined;
    ngx.header["Content-Length"] = `${reason.length}`;
    ngx.send_headers();
    ngx.print(reason);
    ngx.exit(ngx.HTTP_OK);
}

interface Page {
    /** registry position to start after */
    from: number;
    /** at most this many upstreams (0: all) */
    limit: number;
}

/** ?limit= and ?after= (JSON views): the page, or undefined after answering 400. */
function page(): Page | undefined {
    const rawLimit = ngx.var.arg_limit;
    let limit = 0;
    if (rawLimit !== undefined) {
        const n = tonumber(rawLimit);
        if (n === undefined || math.floor(n) !== n || n < 1 || n > MAX_LIMIT) {
            badRequest(`invalid limit "${rawLimit}": an integer from 1 to ${MAX_LIMIT}`);
            return undefined;
        }
        limit = n;
    }
    const rawAfter = ngx.var.arg_after;
    let from = 0;
    if (rawAfter !== undefined) {
        const [name, err] = validateName(ngx.unescape_uri(rawAfter));
        if (name === undefined) {
            badRequest(`invalid after: ${err}`);
            return undefined;
        }
        const p = order.positionAfter(name);
        if (p === undefined) {
            badRequest(`invalid after: no upstream "${name}" (deleted since the previous page? start again without after=)`);
            return undefined;
        }
        from = p;
    }
    return { from, limit };
}

/**
 * Walks the upstreams in creation order from position `from`, calling fn for each until `limit` were
 * visited (0: all), the client left, or the end. Returns the name to continue after, when it stopped at the
 * limit with more to come. fn returns false to skip a name (deleted since) without counting it.
 */
function walk(st: Stream, from: number, limit: number, fn: (this: void, name: string) => boolean): string | undefined {
    let visited = 0;
    let [name, i] = order.nextAfter(from);
    let last: string | undefined;
    while (name !== undefined && !st.closed) {
        if (limit > 0 && visited >= limit) return last;
        if (fn(name)) {
            visited = visited + 1;
            last = name;
            item(st);
        }
        // a piece may have yielded and names may have moved: continue after this one, where it is now
        i = order.positionAfter(name) ?? i;
        [name, i] = order.nextAfter(i);
    }
    return undefined;
}

/** Closes a JSON listing, with "next" when a page stopped at its limit. */
function endJson(st: Stream, next: string | undefined): void {
    if (next === undefined) {
        put(st, "]}\n");
    } else {
        const [text] = cjson.encode(order.shown(next));
        put(st, `],"next":${text ?? '""'}}\n`);
    }
    finish(st);
}

/** GET /list (plain: one NAME per line; 204 when there is none) and GET /list?format=json. */
export function listView(json: boolean): void {
    if (!json) {
        if (order.count() === 0) {
            ngx.exit(204);
            return;
        }
        const st = newStream();
        walk(st, 0, 0, (name: string) => {
            put(st, order.shown(name) + "\n");
            return true;
        });
        return finish(st);
    }
    const pg = page();
    if (pg === undefined) return;
    const st = newStream("application/json");
    put(st, '{"upstreams":[');
    let first = true;
    const next = walk(st, pg.from, pg.limit, (name: string) => {
        const [text] = cjson.encode(order.shown(name));
        put(st, (first ? "" : ",") + (text ?? '""'));
        first = false;
        return true;
    });
    endJson(st, next);
}

/** GET /detail (plain: the original's blocks; 204 when there is none) and GET /detail?format=json. */
export function detailView(json: boolean): void {
    if (!json) {
        if (order.count() === 0) {
            ngx.exit(204);
            return;
        }
        const st = newStream();
        walk(st, 0, 0, (name: string) => {
            const rec = record(name);
            if (rec === undefined) return false;
            const lines: string[] = [];
            // a record that cannot be shown (a bug) is logged and left out, not a 500 for the whole answer
            const [ok, err] = pcall(detailLines, rec, true, lines);
            if (!ok) {
                ngx.log(ngx.ERR, "dyups: cannot show upstream ", name, ": ", err);
                return false;
            }
            put(st, (rec.display ?? name) + "\n");
            put(st, table.concat(lines));
            put(st, "\n");
            return true;
        });
        return finish(st);
    }
    const pg = page();
    if (pg === undefined) return;
    const st = newStream("application/json");
    put(st, '{"upstreams":[');
    let first = true;
    const next = walk(st, pg.from, pg.limit, (name: string) => {
        const rec = record(name);
        if (rec === undefined) return false;
        const [ok, view] = pcall(recordJson, rec);
        if (!ok) {
            ngx.log(ngx.ERR, "dyups: cannot show upstream ", name, ": ", view);
            return false;
        }
        const [text] = cjson.encode(view);
        put(st, (first ? "" : ",") + (text ?? "null"));
        first = false;
        return true;
    });
    endJson(st, next);
}
