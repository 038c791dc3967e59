/** @noSelfInFile */
// Reads one upstream's published counters and its peers' health into plain figures, for GET /metrics
// (metrics/exposition.ts) and GET /stats (metrics/stats.ts). Content phase. Costs: shm gets only: 2 for an
// upstream that had no request and 1 per peer that had no try; about 20 + 10 per peer for busy ones.
import { BUCKETS, P_CLASS, P_DONE, P_FAIL_CONNECT, P_FAIL_READ, P_TRY, U_BUCKET, U_CLASS, U_REQ, U_RETRY, U_SUM } from "./counters";
import type { UpstreamInfo } from "./catalog";
import { passiveFailed, readCounter, slotPrefix } from "../store/metrics";
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
    /** the balancer may pick it now (not down, not failed, not checked down) */
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
    peers: PeerFigures[];
    /** peers the balancer may pick now */
    peersUp: number;
}

/**
 * The figures of one upstream. d: the metrics dict (undefined: counting off, counters read as 0).
 * now: ngx.now(), for passive marks.
 */
export function readFigures(d: NgxSharedDict | undefined, info: UpstreamInfo, now: number): UpstreamFigures {
    const up: UpstreamFigures = { requests: 0, retries: 0, classes: [0, 0, 0, 0, 0], sum: 0, count: 0, buckets: [], peers: [], peersUp: 0 };
    if (d !== undefined) {
        const pre = slotPrefix(info.name, "");
        up.requests = readCounter(d, pre + U_REQ);
        up.retries = readCounter(d, pre + U_RETRY);
        if (up.requests > 0) {
            for (let k = 1; k <= 5; k++) up.classes[k - 1] = readCounter(d, pre + (U_CLASS + k));
            up.sum = readCounter(d, pre + U_SUM);
            let count = 0;
            for (let b = 1; b <= BUCKETS; b++) {
                const n = readCounter(d, pre + (U_BUCKET + b));
                up.buckets[b - 1] = n;
                count = count + n;
            }
            up.count = count;
        }
    }
    for (const [i, p] of ipairs(info.peers)) {
        const f: PeerFigures = { tries: 0, classes: [0, 0, 0, 0, 0], connectFailures: 0, readFailures: 0, active: 0, failed: false, up: false };
        if (d !== undefined) {
            const pre = slotPrefix(info.name, p.id);
            f.tries = readCounter(d, pre + P_TRY);
            if (f.tries > 0) {
                for (let k = 1; k <= 5; k++) f.classes[k - 1] = readCounter(d, pre + (P_CLASS + k));
                f.connectFailures = readCounter(d, pre + P_FAIL_CONNECT);
                f.readFailures = readCounter(d, pre + P_FAIL_READ);
                f.active = math.max(0, f.tries - readCounter(d, pre + P_DONE));
            }
        }
        for (const [j, e] of ipairs(p.entries)) {
            if (!f.failed && passiveFailed(e, p.maxFails[j - 1], p.failTimeouts[j - 1], now)) f.failed = true;
        }
        let checkDown = false;
        if (p.checkKey !== "") {
            const flag = readDownFlag(p.checkKey);
            checkDown = flag < 0 ? info.defaultDown : flag === 1;
            f.check = checkDown ? "down" : "up";
        }
        f.up = !p.down && !f.failed && !checkDown;
        if (f.up) up.peersUp = up.peersUp + 1;
        up.peers[i - 1] = f;
    }
    return up;
}
