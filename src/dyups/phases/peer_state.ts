/** @noSelfInFile */
// Cross-worker peer state in the shared dict, keyed by peer address (so it survives upstream changes):
// passive health (nginx's max_fails / fail_timeout) and active request counts (least_conn, max_conns).
// Phases: balancer and log (shm get/incr/set only: no locks, no yields).
//
// nginx semantics kept: a peer with max_fails > 0 that failed max_fails times within fail_timeout is not
// picked for fail_timeout; after that one request may try it; failing again marks it down at once (the
// failure count outlives the down mark), and a success clears the count.
// Accepted race: two workers may both count the failure that crosses max_fails; the mark is set twice.
//
// Per-worker cache: down marks and "has a failure count" are cached per key and dropped whenever the health
// generation (HEALTH_GEN, bumped after every failure's writes) moves. A request reads that one key
// (healthSync) instead of one key per candidate peer plus one at its end: in the steady state (no failures)
// passive health costs one shm get per request, whatever the number of peers. A down mark is cached with its
// end time, so its expiry needs no shm read either.
import { noteFailure, PeerState } from "../balance/peer_set";
import { Peers } from "../registry";
import { checkedDown, flushCheckCache } from "../health/cache";
import { HEALTH_GEN } from "../store/keys";
import { shm } from "../store/shm";

let dict: NgxSharedDict | undefined;
/** the health generation the caches below belong to */
let seenGen = -1;
/** d:<peer> -> the end of its down mark (0: not marked) */
let downUntil: LuaTable<string, number> = new LuaTable();
/** f:<peer> -> whether it has a failure count */
let failing: LuaTable<string, boolean> = new LuaTable();
const now = ngx.now;

function d(): NgxSharedDict {
    if (dict === undefined) dict = shm();
    return dict;
}

function flush(gen: number): void {
    seenGen = gen;
    flushCheckCache();
    downUntil = new LuaTable();
    failing = new LuaTable();
}

/** Drops this worker's cached peer health if another worker recorded a failure since. One shm get. */
export function healthSync(): void {
    const [g] = (dict ?? d()).get(HEALTH_GEN);
    const gen = (g as number | undefined) ?? 0;
    if (gen !== seenGen) flush(gen);
}

function available(set: Peers, gi: number): boolean {
    // active checks (health/cache.ts): also for a lone server, as the check module
    if (set.hcKeys !== undefined && checkedDown(set, gi)) return false;
    // like nginx, a lone server is never taken out for failures (there is nothing else to try)
    if (!set.single && (set.maxFails as unknown as LuaTable<number, number>).get(gi) > 0) {
        const dkey = (set.dkeys as unknown as LuaTable<number, string>).get(gi);
        let until = downUntil.get(dkey);
        if (until === undefined) {
            const [v] = (dict ?? d()).get(dkey);
            // a mark written by an older release holds `true`: look again in a second
            until = v === undefined ? 0 : type(v) === "number" ? (v as number) : now() + 1;
            downUntil.set(dkey, until);
        }
        if (until > 0 && now() < until) return false;
    }
    const mc = (set.maxConns as unknown as LuaTable<number, number>).get(gi);
    if (mc > 0) {
        const [c] = (dict ?? d()).get((set.kkeys as unknown as LuaTable<number, string>).get(gi));
        if (c !== undefined && (c as number) >= mc) return false;
    }
    return true;
}

function conns(set: Peers, gi: number): number {
    const [c] = (dict ?? d()).get((set.kkeys as unknown as LuaTable<number, string>).get(gi));
    return (c as number | undefined) ?? 0;
}

export const peerState: PeerState = {
    available: available as unknown as PeerState["available"],
    conns: conns as unknown as PeerState["conns"],
};

/** A try on peer gi failed (connect error, timeout, or a proxy_next_upstream condition). */
export function reportFailure(set: Peers, gi: number): void {
    const maxFails = (set.maxFails as unknown as LuaTable<number, number>).get(gi);
    if (maxFails <= 0 || set.single) return;
    noteFailure(set, gi); // this worker's smooth WRR lowers the peer's effective weight, as nginx does
    const ft = (set.failTimeouts as unknown as LuaTable<number, number>).get(gi);
    const sd = dict ?? d();
    const fkey = (set.fkeys as unknown as LuaTable<number, string>).get(gi);
    const [n] = sd.incr(fkey, 1, 0, ft);
    if (n !== undefined && n >= maxFails) {
        sd.set((set.dkeys as unknown as LuaTable<number, string>).get(gi), now() + ft, ft);
        // keep the count past the down mark, so one more failure after fail_timeout marks it down again
        sd.expire(fkey, ft * 2);
        ngx.log(ngx.WARN, "dyups: upstream server temporarily disabled: ", (set.ids as unknown as LuaTable<number, string>).get(gi),
            " (", n, " failures within ", ft, "s)");
    }
    // after the writes: a worker that sees the new generation reads them
    const [gen] = sd.incr(HEALTH_GEN, 1, 0);
    flush((gen as number | undefined) ?? -1);
}

/** A try on peer gi succeeded: clear its failure count (no shm access when the cache says there is none). */
export function reportSuccess(set: Peers, gi: number): void {
    if ((set.maxFails as unknown as LuaTable<number, number>).get(gi) <= 0) return;
    const fkey = (set.fkeys as unknown as LuaTable<number, string>).get(gi);
    let f = failing.get(fkey);
    const sd = dict ?? d();
    if (f === undefined) {
        const [n] = sd.get(fkey);
        f = n !== undefined;
    }
    if (f) sd.delete(fkey);
    failing.set(fkey, false);
}

export function connOpen(set: Peers, gi: number): void {
    (dict ?? d()).incr((set.kkeys as unknown as LuaTable<number, string>).get(gi), 1, 0);
}

export function connClose(set: Peers, gi: number): void {
    const sd = dict ?? d();
    const key = (set.kkeys as unknown as LuaTable<number, string>).get(gi);
    const [n] = sd.incr(key, -1, 0);
    if (n !== undefined && n <= 0) sd.delete(key);
}
