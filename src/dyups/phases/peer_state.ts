/** @noSelfInFile */
// Cross-worker peer state in the shared dict, keyed by peer address (so it survives upstream changes):
// passive health (nginx's max_fails / fail_timeout) and active request counts (least_conn, max_conns).
// Phases: balancer and log (shm get/incr/set only: no locks, no yields).
//
// nginx semantics kept: a peer with max_fails > 0 that failed max_fails times within fail_timeout is not
// picked for fail_timeout; after that one request may try it; failing again marks it down at once (the
// failure count outlives the down mark), and a success clears the count.
// Accepted race: two workers may both count the failure that crosses max_fails; the mark is set twice.
import { noteFailure, PeerState } from "../balance/peer_set";
import { Peers } from "../registry";
import { shm } from "../store/shm";

let dict: NgxSharedDict | undefined;

function d(): NgxSharedDict {
    if (dict === undefined) dict = shm();
    return dict;
}

function available(set: Peers, gi: number): boolean {
    const sd = dict ?? d();
    // like nginx, a lone server is never taken out for failures (there is nothing else to try)
    if (!set.single && (set.maxFails as unknown as LuaTable<number, number>).get(gi) > 0) {
        const [down] = sd.get((set.dkeys as unknown as LuaTable<number, string>).get(gi));
        if (down !== undefined) return false;
    }
    const mc = (set.maxConns as unknown as LuaTable<number, number>).get(gi);
    if (mc > 0) {
        const [c] = sd.get((set.kkeys as unknown as LuaTable<number, string>).get(gi));
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
        sd.set((set.dkeys as unknown as LuaTable<number, string>).get(gi), true, ft);
        // keep the count past the down mark, so one more failure after fail_timeout marks it down again
        sd.expire(fkey, ft * 2);
        ngx.log(ngx.WARN, "dyups: upstream server temporarily disabled: ", (set.ids as unknown as LuaTable<number, string>).get(gi),
            " (", n, " failures within ", ft, "s)");
    }
}

/** A try on peer gi succeeded: clear its failure count (one shm get when there is none). */
export function reportSuccess(set: Peers, gi: number): void {
    if ((set.maxFails as unknown as LuaTable<number, number>).get(gi) <= 0) return;
    const sd = dict ?? d();
    const fkey = (set.fkeys as unknown as LuaTable<number, string>).get(gi);
    const [n] = sd.get(fkey);
    if (n !== undefined) sd.delete(fkey);
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
