/** @noSelfInFile */
// balancer_by_lua and log_by_lua entry points: the per-request path. No yields, no locks, no string
// building (except composite hash keys), no TSTL lualib helpers.
//
// First try: the version gate (registry.sync: one shm get), look up $dyups_upstream, pin the version
// (refs + 1, held in ngx.ctx), set_more_tries, the health generation (one shm get, when max_fails is on),
// pick. Retries: report the failed peer, mark it tried, pick again from the same pinned version. Log phase: report the last try's outcome, close the connection
// count, release the pin; the last holder of a retired version unlinks it. A picker that wants outcomes
// (peers.wantsOutcome: ewma, registered ones) is told each try's outcome and time (balance/outcome.ts).
// Unknown upstream or no available peer: no peer is set, so nginx falls back to the placeholder server
// (127.0.0.1:1 down) and answers 502 without sending anything anywhere.
import * as balancer from "ngx.balancer";
import { noteOutcome } from "../balance/outcome";
import { pick } from "../balance/peer_set";
import type { UpstreamVersion } from "../registry/build";
import { lookup, releaseRetired, sync } from "../registry/sync";
import { connClose, connOpen, healthSync, peerState, Peers, picked, reportFailure, reportSuccess } from "../store/peer_health";

const set_current_peer = balancer.set_current_peer;
const set_more_tries = balancer.set_more_tries;
/** lua-nginx-module >= 0.10.27 / recent OpenResty: per-upstream keepalive pools; undefined on Debian's 0.10.23 build */
const enable_keepalive = balancer.enable_keepalive;
const get_last_failure = balancer.get_last_failure;
const lower = string.lower;
const concat = table.concat;
const log = ngx.log;
const INFO = ngx.INFO;
const ERR = ngx.ERR;
const now = ngx.now;

function hashKey(ver: UpstreamVersion): string {
    const vars = ngx.var;
    const n = ver.keyParts;
    const lits = ver.keyLits as string[];
    const names = ver.keyVars as string[];
    if (n === 1 && lits[0] === "") {
        const name = names[0];
        return name === "" ? "" : (vars[name] ?? "");
    }
    const buf: string[] = [];
    let j = 0;
    for (let i = 1; i <= n; i++) {
        j = j + 1;
        buf[j - 1] = lits[i - 1];
        const name = names[i - 1];
        if (name !== "") {
            j = j + 1;
            buf[j - 1] = vars[name] ?? "";
        }
    }
    return concat(buf);
}

function keyFor(ver: UpstreamVersion): string | undefined {
    const m = ver.method;
    if (m === "ip_hash") return ngx.var.remote_addr;
    if (ver.keyParts > 0) return hashKey(ver); // hash KEY, or a balancer's key=
    return undefined;
}

/** balancer_by_lua: the per-request path. */
function balance(): void {
    pickPeer(true);
}

/**
 * One balancer try. `gate`: run the per-request version gate first (always, but for the benchmark entry
 * point dyups.bench.ungated, which measures what the gate costs).
 */
function pickPeer(gate: boolean): void {
    const ctx = ngx.ctx;
    let ver = ctx.dyups_v as UpstreamVersion | undefined;
    let tried = ctx.dyups_tried as LuaTable<number, boolean> | undefined;
    if (ver === undefined) {
        if (gate) sync();
        const name = ngx.var.dyups_upstream;
        if (name === undefined || name === "") {
            log(ERR, "dyups: $dyups_upstream is empty: set it before proxy_pass http://dyups");
            return;
        }
        ver = lookup(name) ?? lookup(lower(name));
        if (ver === undefined) {
            log(INFO, "dyups: no upstream named \"", name, "\"");
            return;
        }
        ver.refs = ver.refs + 1;
        ctx.dyups_v = ver;
        // nginx allows one try per server that is not down (primaries and backups). The placeholder server
        // is `down`, so the block itself contributes 0 tries: set_more_tries(n) gives n tries in all.
        const tries = ver.peers.tries;
        if (tries > 1) set_more_tries(tries);
        if (ver.peers.anyMaxFails || ver.peers.hcKeys !== undefined) healthSync();
    } else {
        // a retry: the previous try on peer gi failed
        const prev = ctx.dyups_gi as number;
        if (prev > 0) {
            const peers = ver.peers;
            const [state, code] = get_last_failure();
            if (peers.wantsOutcome) noteOutcome(peers, peerState, prev, state !== "failed", now() - (ctx.dyups_t as number));
            if (state === "failed") {
                reportFailure(peers, prev);
                // a status that failed a try is one of this location's proxy_next_upstream conditions (http_500,
                // ...): the log phase counts it on the last try too, as nginx does. 502/504 also stand for
                // connection errors and timeouts, which lastTryFailed() recognises by themselves.
                if (code !== undefined && code !== 502 && code !== 504) ctx.dyups_fstatus = code;
            }
            if (ctx.dyups_conn === true) {
                connClose(peers, prev);
                ctx.dyups_conn = false;
            }
            if (tried === undefined) {
                tried = new LuaTable();
                ctx.dyups_tried = tried;
            }
            tried.set(prev, true);
        }
    }
    const peers: Peers = ver.peers;
    if (peers.total === 0) {
        log(ERR, "dyups: upstream \"", ver.name, "\" has no resolved servers");
        return;
    }
    const gi = pick(peers, peerState, tried, keyFor(ver));
    ctx.dyups_gi = gi;
    if (gi === 0) {
        log(ERR, "dyups: no live servers in upstream \"", ver.name, "\"");
        return;
    }
    if (peers.wantsOutcome) ctx.dyups_t = now(); // the try's start: its outcome reports its time (ms resolution)
    const port = peers.ports[gi - 1];
    const host = peers.hosts[gi - 1];
    let ok: true | undefined;
    let err: string | undefined;
    if (port > 0) [ok, err] = set_current_peer(host, port);
    else [ok, err] = set_current_peer(host); // unix:/path
    if (!ok) {
        log(ERR, "dyups: cannot set peer ", peers.ids[gi - 1], ": ", err);
        return;
    }
    if (peers.anyMaxFails) picked(peers, gi);
    if (enable_keepalive !== undefined && ver.keepalive > 0) enable_keepalive(ver.keepaliveTimeout, ver.keepaliveRequests);
    if (peers.trackConns) {
        connOpen(peers, gi);
        ctx.dyups_conn = true;
    }
}

/**
 * The last try failed at the connection level (no response header from the peer). nginx also counts a
 * last try whose status is a proxy_next_upstream condition (http_500, ...); the log phase cannot read the
 * location's conditions, so it counts the status an earlier try of the request failed with (dyups_fstatus).
 */
function lastTryFailed(): boolean {
    const status = ngx.status;
    if (status !== 502 && status !== 504) return false;
    const times = ngx.var.upstream_header_time;
    if (times === undefined) return true;
    const last = string.match(times, "([^,%s]+)%s*$")[0];
    return last === undefined || last === "-";
}

/** log_by_lua: report the last try, close its connection count, release the pinned version. */
function logPhase(): void {
    const ctx = ngx.ctx;
    const ver = ctx.dyups_v as UpstreamVersion | undefined;
    if (ver === undefined) return;
    ctx.dyups_v = undefined;
    const gi = ctx.dyups_gi as number | undefined;
    const peers = ver.peers;
    if (gi !== undefined && gi > 0) {
        if (ctx.dyups_conn === true) {
            connClose(peers, gi);
            ctx.dyups_conn = false;
        }
        if (peers.anyMaxFails) {
            if (lastTryFailed() || (ctx.dyups_fstatus !== undefined && ctx.dyups_fstatus === ngx.status)) reportFailure(peers, gi);
            else reportSuccess(peers, gi);
        }
        if (peers.wantsOutcome) {
            const failed = lastTryFailed() || (ctx.dyups_fstatus !== undefined && ctx.dyups_fstatus === ngx.status);
            noteOutcome(peers, peerState, gi, !failed, now() - (ctx.dyups_t as number));
        }
    }
    ver.refs = ver.refs - 1;
    if (ver.retired && ver.refs <= 0) releaseRetired(ver);
}

export { balance, pickPeer, logPhase };
