/** @noSelfInFile */
// What `balancer ewma` shares across workers, and why only this: score snapshots off the request path.
//
// Picks and outcomes stay per worker (balance/ewma.ts: the scores and active requests of a version live in
// the worker's Lua heap). Sharing them per request would cost shared-memory operations on every try (a read
// per candidate, a write per outcome, two counter updates for active requests, each under the dict's lock):
// scripts/bench-pickers.mjs measures that variant against the per-worker one, and a worker learns a slow
// server from its own first slow answer anyway (a peak counts at once).
// What a worker cannot learn from its own traffic is the past: a new version of the upstream (an update, a
// DNS change), a reload, a respawned worker or one that starts routing to the upstream would start every
// server at "unknown" (attractive: an untried server gets requests until they return) and send its first
// concurrent requests to a server every other worker knows is slow or dead. So:
//   - publishEwma (timer, every worker, at most once a second): the score and stamp of each server entry that
//     had outcomes in this worker since its last publication: ew:<entry>;
//   - seedEwma (when a worker builds a version that uses ewma: registry/build.ts, never per request): each
//     server entry starts from ew:<entry>, decayed from its stamp like any score.
// Key: ew:<entry> (store/keys.ts), entry = "<upstream>/<address>#<n>" as passive health's. Written with safe_set
// (a full dict never evicts configuration: the snapshot is then skipped). TTL 20 half-lives (at least 60 s):
// after that a score has decayed to a millionth of itself, so keys of vanished entries go away on their own.
// Races accepted: two workers publishing the same entry: the last write wins (both are recent views).
// Costs: per request none; per second per worker O(entries of this worker's ewma versions) table reads and one
// shm write per entry that had outcomes; per build O(peers) shm reads (ewma upstreams only).
import type { EwmaData } from "../balance/ewma";
import { EWMA } from "../balance/ewma";
import { dict } from "./dict";
import { EWMA_PREFIX } from "./keys";
import type { Peers } from "./peer_health";

/** seconds between two publications of this worker */
const PUBLISH_EVERY = 1;
/** a snapshot lives this many half-lives (and at least MIN_TTL seconds) */
const TTL_HALF_LIVES = 20;
const MIN_TTL = 60;

/** This worker's ewma versions (weak keys: a version the GC collects leaves): data -> its entries. */
const live = new LuaTable<EwmaData, string[]>();
setmetatable(live, { __mode: "k" });
let nextPublish = 0;

function ttlOf(d: EwmaData): number {
    const t = math.ceil(d.halfLife * TTL_HALF_LIVES);
    return t < MIN_TTL ? MIN_TTL : t;
}

/**
 * A worker built a version: if it uses ewma, its entries start from the snapshots in the dict, and it is
 * published from now on. O(peers) shm gets for ewma versions; nothing for others.
 */
export function seedEwma(peers: Peers): void {
    if (peers.picker !== EWMA) return;
    const d = peers.data as EwmaData;
    const sd = dict();
    for (const gi of $range(1, peers.total)) {
        const [v] = sd.get(EWMA_PREFIX + peers.entries[gi - 1]);
        if (v !== undefined && type(v) === "string") {
            const [s, t] = string.match(v as string, "^(%S+) (%S+)$");
            const score = tonumber(s);
            const stamp = tonumber(t);
            if (score !== undefined && stamp !== undefined && score > 0) {
                d.score[gi - 1] = score;
                d.stamp[gi - 1] = stamp;
                d.published[gi - 1] = stamp;
            }
        }
    }
    live.set(d, peers.entries);
}

/** Timer (every worker): publishes the scores that moved in this worker since its last pass, once a second. */
export function publishEwma(): void {
    const now = ngx.now();
    if (now < nextPublish) return;
    nextPublish = now + PUBLISH_EVERY;
    let sd: NgxSharedDict | undefined;
    for (const [d, entries] of pairs(live)) {
        for (const gi of $range(1, entries.length)) {
            const stamp = d.stamp[gi - 1];
            if (stamp > d.published[gi - 1]) {
                d.published[gi - 1] = stamp;
                sd = sd ?? dict();
                sd.safe_set(EWMA_PREFIX + entries[gi - 1], `${d.score[gi - 1]} ${stamp}`, ttlOf(d));
            }
        }
    }
}
