/** @noSelfInFile */
// The peer-set types shared by the builder (peer_set.ts) and the pickers (one file per algorithm).
// Types only: nothing here exists at run time.
//
// INDEX CONVENTION. A peer is named by its global index `gi`, a Lua 1-based index: primaries are
// 1..nPrimary in body order, backups nPrimary+1..total in body order. Every per-peer array of a PeerSet
// is a Lua sequence holding peer gi at Lua index gi. TypeScript reads it as `set.hosts[gi - 1]`, which TSTL
// emits as exactly `set.hosts[gi]`: that is the one idiom for per-peer arrays (no LuaTable views of them).
// `tried` is keyed by gi; a pick returns gi, or 0 for none.

/** nginx's methods, and "balancer": a picker named by the `balancer NAME` directive (balance/pickers.ts). */
export type MethodName = "round_robin" | "ip_hash" | "hash" | "least_conn" | "random" | "balancer";

export interface PeerInit {
    /** "host:port" or "unix:/path": the address. */
    id: string;
    host: string;
    port: number;
    /** integer >= 1 */
    weight: number;
    maxFails: number;
    failTimeout: number;
    maxConns: number;
    backup: boolean;
    down: boolean;
    /**
     * Optional: the server directive's address as written (nginx's peer->server), e.g. "api.local:8080",
     * "api.local" (no port written), "unix:/tmp/s". `hash ... consistent` builds its ring points from it
     * and treats peers sharing it (a name resolving to several addresses) as one ring member, exactly as
     * nginx does. Defaults to `id`.
     */
    server?: string;
}

export interface PeerOptions {
    method: MethodName;
    hashConsistent: boolean;
    randomTwo: boolean;
    /** Tests: start smooth WRR from nginx's zero state instead of a random point of its cycle. */
    noRandomStart?: boolean;
    /** method "balancer": the picker's name and its `key=value` arguments as written */
    picker?: string;
    pickerArgs?: string[];
}

/** Availability is owned by the caller (shared-memory passive health, active checks, max_conns). */
/** @noSelf */
export interface PeerState {
    /** false while the peer is marked failed (max_fails within fail_timeout), checked down, or at max_conns */
    available(set: PeerSet, gi: number): boolean;
    /** active connections to this peer across workers (least_conn, random two) */
    conns(set: PeerSet, gi: number): number;
    /** the current time in seconds (nginx's cached clock in nginx: ms resolution; any clock in tests) */
    now(): number;
}

/**
 * A PICKER: one balancing method, built-in (round robin, least_conn, ip_hash, hash, hash consistent, random,
 * random two, ewma) or registered by name from Lua (balance/pickers.ts). The dispatch (peer_set.ts pick) calls
 * `set.picker.pick`; nothing else in the request path knows which method a set uses.
 *   validate  apply time (a write, a start, a body from etcd) and once per build: the `balancer NAME k=v ...`
 *             arguments (k -> v) -> the picker's configuration, or [undefined, reason]. Never per request.
 *             Built-in nginx methods take their parameters from their own directives and have none.
 *   build     once per upstream version in each worker that routes to it (and once in the sandbox build of
 *             the write that makes the version): prepares the version's state (returned; kept as set.data)
 *             from the peer set, the configuration and the server texts (nginx's peer->server per gi).
 *   pick      per try: a usable peer (not down, not in `tried`, state.available) as gi, or 0 exactly when
 *             none is usable; primaries before backups. Allocates nothing.
 *   outcome   optional; per try that pick returned a peer for, exactly once, in the same worker: ok (false:
 *             connection error, timeout, or a status the location retries on), and the seconds the try took
 *             (nginx's cached clock: ms resolution). Its presence sets set.wantsOutcome: the phases pay
 *             nothing for pickers without it.
 */
/** @noSelf */
export interface Picker {
    name: string;
    validate?(args: LuaTable<string, string>): LuaMultiReturn<[unknown, undefined] | [undefined, string]>;
    build?(set: PeerSet, config: unknown, servers: string[]): unknown;
    pick(set: PeerSet, state: PeerState, tried: Tried, key: string | undefined): number;
    outcome?(set: PeerSet, state: PeerState, gi: number, ok: boolean, elapsed: number): void;
}

/** The request's tried peers (gi -> true), or undefined on a first try. */
export type Tried = LuaTable<number, boolean> | undefined;

export interface PeerSet {
    total: number;
    nPrimary: number;
    ids: string[];
    hosts: string[];
    ports: number[];
    weights: number[];
    maxFails: number[];
    failTimeouts: number[];
    maxConns: number[];
    down: boolean[];
    /** nginx's peers->single: exactly one primary and no backup (hash methods then use round robin). */
    single: boolean;
    /** nginx's peer.tries: servers not marked down (primary + backup); a request makes at most this many tries. */
    tries: number;
    /** Σ weight of the primaries, down ones included (nginx's total_weight: the hash modulus). */
    totalWeight: number;

    // ---- the picker ----
    /** the method's picker: pick() dispatches to picker.pick */
    picker: Picker;
    /** what picker.build returned: the picker's own per-version state (undefined for nginx's methods) */
    data: unknown;
    /** picker.outcome exists: the balancer and log phases report each try's outcome */
    wantsOutcome: boolean;
    /** why the named picker is not used (not registered here, arguments refused): round robin is used */
    pickerProblem?: string;
    /** a registered picker's answers that broke the contract (pickers.ts registeredPick) */
    misPicks?: number;

    // ---- picker state: private to the balance modules, precomputed by buildPeerSet ----
    /** smooth WRR current_weight per gi (mutated by picks) */
    balCurrent: number[];
    /** smooth WRR effective_weight per gi (mutated by picks and noteFailure) */
    balEffective: number[];
    /** primaries: Σ weight of the primaries before gi (ip_hash/hash/random weight walk by bisection) */
    balStart: number[];
    /** consistent hash ring: sorted unique point hashes (unsigned 32-bit), and the group of each point */
    balRingHash: number[];
    balRingGroup: number[];
    balRingSize: number;
    /** least_conn scratch: connection count per gi read by a pick's first pass; -1 when not a candidate */
    balConns: number[];
    /** consistent hash groups (peers sharing a server text): first member gi; next member gi or 0 */
    balGroupFirst: number[];
    balGroupNext: number[];
}
