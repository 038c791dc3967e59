/** @noSelfInFile */
// balancer_by_lua and log_by_lua entry points: the per-request path. No yields, no locks, no string
// building (except composite hash keys), no TSTL lualib helpers, no allocation in the steady state.
//
// First try: the version gate (registry.sync: one shm get), $dyups_upstream (one ngx.var read: the
// request's only input), look it up, pin the version (refs + 1) in the request's slot (phases/request_slot.ts:
// not ngx.ctx), set_more_tries, pick. Retries: report the failed peer, mark it tried, pick again from the
// same pinned version. Log phase: report the last try's outcome, close the connection count, release the
// pin and the slot; the last holder of a retired version unlinks it. A request that never reached this
// balancer costs the log phase one table lookup.
// A picker that wants outcomes (peers.wantsOutcome: ewma, registered ones) is told each try's outcome and time
// (balance/outcome.ts).
// Passive and active health are read from this worker's cache (store/peer_health.ts), refreshed by the
// timer (healthSync every sync_interval) and at once by this worker's own reports: no shm read per request.
// Unknown upstream or no available peer: no peer is set, so nginx falls back to the placeholder server
// (127.0.0.1:1 down) and answers 502 without sending anything anywhere.
import * as balancer from "ngx.balancer";
import { pick } from "../balance/peer_set";
import type { UpstreamVersion } from "../registry/build";
import { lookup, releaseRetired, sync } from "../registry/sync";
import { connClose, connOpen, peerState, Peers, picked, reportFailure, reportSuccess } from "../store/peer_health";
import { closeSlot, openSlot, requestKey, Slot, slotOf, triedOf } from "./request_slot";
import { countRetry, countTry, observe } from "../metrics/counters";
import { noteOutcome } from "../balance/outcome";

const set_current_peer = balancer.set_current_peer;
const set_more_tries = balancer.set_more_tries;
/** lua-nginx-module >= 0.10.27 / recent OpenResty: per-upstream keepalive pools; undefined on Debian's 0.10.23 build */
const enable_keepalive = balancer.enable_keepalive;
const get_last_failure = balancer.get_last_failure;
const lower = string.lower;
const concat = table.concat;
const start_time = ngx.req.start_time;
const now = ngx.now;
const log = ngx.log;
const INFO = ngx.INFO;
const ERR = ngx.ERR;
const WARN = ngx.WARN;

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

/** name -> its lowercase spelling, for names that miss the registry as written (bounded) */
let lowered: LuaTable<string, string> = new LuaTable();
let loweredCount = 0;

/** The version NAME routes to: as written, else lowercase (names are case-insensitive). */
function versionOf(name: string): UpstreamVersion | undefined {
    const ver = lookup(name);
    if (ver !== undefined) return ver;
    let l = lowered.get(name);
    if (l === undefined) {
        if (loweredCount >= 4096) {
            lowered = new LuaTable();
            loweredCount = 0;
        }
        l = lower(name);
        lowered.set(name, l);
        loweredCount = loweredCount + 1;
    }
    return l === name ? undefined : lookup(l);
}

/** Gives back what a slot holds: its connection count, its pin. `report`: also report the last try's outcome. */
function release(key: number, slot: Slot, report: boolean): void {
    const ver = slot.ver as UpstreamVersion;
    const gi = slot.gi;
    const peers = ver.peers;
    observe(ver, gi, slot.tt, report);
    if (gi > 0) {
        if (slot.conn) connClose(peers, gi);
        if (report && (peers.anyMaxFails || peers.wantsOutcome)) {
            const fs = slot.fstatus;
            const failed = lastTryFailed() || (fs !== 0 && fs === ngx.status);
            if (peers.anyMaxFails) {
                if (failed) reportFailure(peers, gi);
                else reportSuccess(peers, gi);
            }
            if (peers.wantsOutcome) noteOutcome(peers, peerState, gi, !failed, now() - slot.ts);
        }
    }
    closeSlot(key, slot);
    ver.refs = ver.refs - 1;
    if (ver.retired && ver.refs <= 0) releaseRetired(ver);
}

let staleWarned = false;

/** A request used dyups but its log phase never ran dyups' log(): said once per worker (never per request). */
function staleSlot(): void {
    if (staleWarned) return;
    staleWarned = true;
    log(WARN, "dyups: a request that went through the dyups balancer ended without dyups' log phase: a location ",
        "that proxies to http://dyups needs nginx/dyups-location.conf (or require(\"dyups\").log() in its own ",
        "log_by_lua*) when nginx/dyups-http.conf is the include, or it was a subrequest. Its pinned version and ",
        "connection count were released late and its outcome was not reported to passive health (said once per worker)");
}

/**
 * One balancer try. `gate`: run the per-request version gate first (always, but for the benchmark entry
 * point dyups.bench.ungated, which measures what the gate costs).
 */
function pickPeer(gate: boolean): void {
    const key = requestKey();
    let slot = slotOf(key);
    let ver: UpstreamVersion;
    if (slot !== undefined) {
        const [state, code] = get_last_failure();
        if (state === undefined) {
            // no previous try: the slot is a stale one of an earlier request at this address
            staleSlot();
            release(key, slot, false);
            slot = undefined;
        } else {
            // a retry: the previous try on peer gi failed
            ver = slot.ver as UpstreamVersion;
            const prev = slot.gi;
            if (prev > 0) {
                countRetry(ver, prev, state, code);
                const peers = ver.peers;
                if (peers.wantsOutcome) noteOutcome(peers, peerState, prev, state !== "failed", now() - slot.ts);
                if (state === "failed") {
                    reportFailure(peers, prev);
                    // a status that failed a try is one of this location's proxy_next_upstream conditions
                    // (http_500, ...): the log phase counts it on the last try too, as nginx does. 502/504
                    // also stand for connection errors and timeouts, which lastTryFailed() recognises.
                    if (code !== undefined && code !== 502 && code !== 504) slot.fstatus = code;
                }
                if (slot.conn) {
                    connClose(peers, prev);
                    slot.conn = false;
                }
                triedOf(slot).set(prev, true);
            }
        }
    }
    if (slot === undefined) {
        if (gate) sync();
        const name = ngx.var.dyups_upstream;
        if (name === undefined || name === "") {
            log(ERR, "dyups: $dyups_upstream is empty: set it before proxy_pass http://dyups");
            return;
        }
        const found = versionOf(name);
        if (found === undefined) {
            log(INFO, "dyups: no upstream named \"", name, "\"");
            return;
        }
        ver = found;
        ver.refs = ver.refs + 1;
        slot = openSlot(key, ver, start_time());
        slot.tt = now(); // the first try's start (metrics: response time)
        // nginx allows one try per server that is not down (primaries and backups). The placeholder server
        // is `down`, so the block itself contributes 0 tries: set_more_tries(n) gives n tries in all.
        const tries = ver.peers.tries;
        if (tries > 1) set_more_tries(tries);
    }
    const v = slot.ver as UpstreamVersion;
    const peers: Peers = v.peers;
    if (peers.total === 0) {
        log(ERR, "dyups: upstream \"", v.name, "\" has no resolved servers");
        return;
    }
    const gi = pick(peers, peerState, slot.tried, keyFor(v));
    slot.gi = gi;
    if (gi === 0) {
        log(ERR, "dyups: no live servers in upstream \"", v.name, "\"");
        return;
    }
    countTry(v, gi, slot.tried !== undefined);
    if (peers.wantsOutcome) slot.ts = now(); // the try's start: its outcome reports its time (ms resolution)
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
    if (enable_keepalive !== undefined && v.keepalive > 0) enable_keepalive(v.keepaliveTimeout, v.keepaliveRequests);
    if (peers.trackConns) {
        connOpen(peers, gi);
        slot.conn = true;
    }
}

/**
 * The last try failed at the connection level (no response header from the peer). nginx also counts a
 * last try whose status is a proxy_next_upstream condition (http_500, ...); the log phase cannot read the
 * location's conditions, so it counts the status an earlier try of the request failed with (slot.fstatus).
 */
function lastTryFailed(): boolean {
    const status = ngx.status;
    if (status !== 502 && status !== 504) return false;
    const times = ngx.var.upstream_header_time;
    if (times === undefined) return true;
    const last = string.match(times, "([^,%s]+)%s*$")[0];
    return last === undefined || last === "-";
}

/** log_by_lua: report the last try, close its connection count, release the pinned version and the slot. */
function logPhase(): void {
    const key = requestKey();
    const slot = slotOf(key);
    if (slot === undefined) return; // this request did not use dyups
    // a slot left by an earlier request at this address (no log phase ran for it) is released, not reported
    release(key, slot, slot.t0 === start_time());
}

export { balance, pickPeer, logPhase };
