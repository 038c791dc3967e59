/** @noSelfInFile */
// Reads one upstream's published counters and its peers' health into plain figures, for GET /metrics
// (metrics/exposition.ts) and GET /stats (metrics/stats.ts). Content phase.
//
// Costs, shm gets per upstream: 3 when it had no request, + 2 per peer; a busy one whose answers are all
// 2xx and fall in the first bucket: 5 + 2 per peer (+1 for a peer with a try in flight). Health costs no get while the health
// generation stands still: the passive states and check flags read are kept per worker until it moves (as
// the balancer keeps them); beginReading() looks at it once per scrape. Allocates nothing per upstream: the figures are scratch tables, valid until
// the next call (callers use them before they yield).
import { BUCKETS, P_CLASS, P_DONE, P_FAIL_CONNECT, P_FAIL_READ, P_TRY, U_BUCKET, U_CLASS } from "./counters";
import { getOptions } from "../options";
import type { UpstreamInfo } from "./catalog";
import { healthGeneration, metricsDict, passiveState, readCounter, slotPrefix } from "../store/metrics";
import { readDownFlag } from "../store/health";

export interface PeerFigures {
    tries: number;
    /** responses by class, index 0..4 = 1xx..5xx */
    classes: number[];
    connectFailures: number;
    readFailures: number;
    /** tries in flight (tries - finished tries) */
    active: number;
    /** passive health (max_fails / fail_timeout) holds it out now */
    failed: boolean;
    /** active check: "up", "down", or undefined when not checked */
    check?: string;
    /** the balancer may pick it now (not down, not drained, not failed, not checked down) */
    up: boolean;
}

export interface UpstreamFigures {
    requests: number;
    retries: number;
    classes: number[];
    /** response-time sum (seconds) and count, and the count of each bucket (not cumulative) */
    sum: number;
    count: number;
    buckets: number[];
    /** peers[i] is info.peers[i]; only the first info.peers.length entries are this upstream's */
    peers: PeerFigures[];
    /** peers the balancer may pick now */
    peersUp: number;
}

/** the classes but 2xx */
const OTHER_CLASSES = [1, 3, 4, 5];

const fig: UpstreamFigures = { requests: 0, retries: 0, classes: [0, 0, 0, 0, 0], sum: 0, count: 0, buckets: [], peers: [], peersUp: 0 };

/** health generation the caches below belong to */
let seenGen = -1;
/** server entry -> its failure count and `checked` time */
let fails: LuaTable<string, number> = new LuaTable();
let checked: LuaTable<string, number> = new LuaTable();
/** hc:d key -> 1 down, 0 up, -1 not stored */
let flags: LuaTable<string, number> = new LuaTable();

function peerScratch(i: number): PeerFigures {
    let f = fig.peers[i - 1];
    if (f === undefined) {
        f = { tries: 0, classes: [0, 0, 0, 0, 0], connectFailures: 0, readFailures: 0, active: 0, failed: false, up: false };
        fig.peers[i - 1] = f;
    }
    f.tries = 0;
    for (let k = 0; k < 5; k++) f.classes[k] = 0;
    f.connectFailures = 0;
    f.readFailures = 0;
    f.active = 0;
    f.failed = false;
    f.check = undefined;
    f.up = false;
    return f;
}

/** Before a scrape's readFigures calls: drops the cached health states if the health generation moved. */
export function beginReading(): void {
    const gen = healthGeneration();
    if (gen !== seenGen) {
        seenGen = gen;
        fails = new LuaTable();
        checked = new LuaTable();
        flags = new LuaTable();
    }
}

/**
 * The figures of one upstream (scratch: valid until the next call). d: the metrics dict (undefined: counting
 * off, counters read as 0). now: ngx.now(), for passive health.
 *
 * Fewer reads for the common case, relying on the publisher's order (a slot's deltas in index order: a total
 * before its parts; buckets before their count): at any instant REQ >= the sum of the classes, DONE >= the
 * classes plus failures, REQ >= the observations in the buckets. So a class read first and then found equal to
 * its total means the other parts were 0 when it was read (they are not read), and the buckets are read in
 * order only until they add up to the REQ read before them: every observation published by then is in those
 * buckets, so the later ones are emitted with that sum (a valid, monotonic histogram, which an observation
 * published meanwhile joins at the next scrape). Requests that reached no peer have no observation: their
 * upstream's buckets are all read.
 */
export function readFigures(d: NgxSharedDict | undefined, info: UpstreamInfo, now: number): UpstreamFigures {
    fig.requests = 0;
    fig.retries = 0;
    for (let k = 0; k < 5; k++) fig.classes[k] = 0;
    fig.sum = 0;
    fig.count = 0;
    for (let b = 0; b < BUCKETS; b++) fig.buckets[b] = 0;
    fig.peersUp = 0;
    if (d !== undefined) {
        const ok2 = readCounter(d, info.kOk);
        fig.requests = readCounter(d, info.kReq);
        fig.retries = readCounter(d, info.kRetry);
        fig.classes[1] = ok2;
        if (fig.requests > 0) {
            const pre = info.prefix;
            if (ok2 !== fig.requests) {
                for (const [, k] of ipairs(OTHER_CLASSES)) fig.classes[k - 1] = readCounter(d, pre + (U_CLASS + k));
            }
            const bound = fig.requests;
            fig.sum = readCounter(d, info.kSum);
            let cum = readCounter(d, info.kB1);
            fig.buckets[0] = cum;
            for (let b = 2; b <= BUCKETS && cum < bound; b++) {
                const n = readCounter(d, pre + (U_BUCKET + b));
                fig.buckets[b - 1] = n;
                cum = cum + n;
            }
            fig.count = cum;
        }
    }
    for (const [i, p] of ipairs(info.peers)) {
        const f = peerScratch(i);
        if (d !== undefined) {
            // TRY >= DONE >= its parts at any instant: 2xx read first and equal to TRY means nothing else
            // (no other class, no failure, nothing in flight) when it was read
            const ok2 = readCounter(d, p.kOk);
            f.tries = readCounter(d, p.kTry);
            f.classes[1] = ok2;
            if (f.tries > 0 && ok2 !== f.tries) {
                const done = readCounter(d, p.kDone);
                if (ok2 !== done) {
                    const pre = p.prefix;
                    for (const [, k] of ipairs(OTHER_CLASSES)) f.classes[k - 1] = readCounter(d, pre + (P_CLASS + k));
                    f.connectFailures = readCounter(d, pre + P_FAIL_CONNECT);
                    f.readFailures = readCounter(d, pre + P_FAIL_READ);
                }
                f.active = math.max(0, f.tries - done);
            }
        }
        // nginx's rule (store/peer_health.ts): out while fails >= max_fails and now - checked <= fail_timeout
        for (const [j, e] of ipairs(p.entries)) {
            let n = fails.get(e);
            if (n === undefined) {
                const [fn, fc] = passiveState(e);
                n = fn;
                fails.set(e, fn);
                checked.set(e, fc);
            }
            if (!f.failed && n > 0 && n >= p.maxFails[j - 1] && now - (checked.get(e) ?? 0) <= p.failTimeouts[j - 1]) f.failed = true;
        }
        let checkDown = false;
        const key = p.checkKey;
        if (key !== "") {
            let flag = flags.get(key);
            if (flag === undefined) {
                flag = readDownFlag(key);
                flags.set(key, flag);
            }
            checkDown = flag < 0 ? info.defaultDown : flag === 1;
            f.check = checkDown ? "down" : "up";
        }
        f.up = !p.down && !p.drain && !f.failed && !checkDown;
        if (f.up) fig.peersUp = fig.peersUp + 1;
    }
    return fig;
}

/**
 * Tries in flight to `peer` of `upstream` across workers, as last published (about once a second): every
 * request counts, whatever version it routes by. Undefined when the counters are off or have no dict.
 */
export function peerInFlight(upstream: string, peer: string): number | undefined {
    if (!getOptions().metrics) return undefined;
    const d = metricsDict();
    if (d === undefined) return undefined;
    const pre = slotPrefix(upstream, peer);
    return math.max(0, readCounter(d, pre + P_TRY) - readCounter(d, pre + P_DONE));
}
