/** @noSelfInFile */
// The peer set of one upstream version: the builder, and the dispatch of a pick to the method's picker
// (types.ts Picker: every method, nginx's own included, is a picker), with nginx 1.22's semantics. One
// algorithm per file, as lua-resty-balancer lays it out:
//   swrr.ts        smooth weighted round robin: the one step, tiers (primaries, backups), effective weight
//   least_conn.ts  least_conn                      hash.ts    ip_hash and hash KEY
//   chash.ts       hash KEY consistent (ring)      random.ts  random and random two [least_conn]
//   walk.ts        the weighted walk of ip_hash, hash and random    types.ts  the types
//   ewma.ts        `balancer ewma` (latency-aware)  pickers.ts `balancer NAME`: the registry, registered pickers
//   outcome.ts     the outcome of a try, for pickers that want it
// Pure: no ngx.* use (math.random only), tested under plain LuaJIT (spec/balance).
//
// Phases: buildPeerSet runs wherever a version is built (O(n), plus the ring of `hash ... consistent`),
// never per request. pick runs in balancer_by_lua on every try. Verified pick for pick against a real
// nginx 1.22 (ip_hash over IPv4 and IPv6 clients, hash, hash consistent, retries after a failing server,
// round-robin order): spec/balance/nginx_parity_spec.lua with the fixture recorded by
// spec/balance/nginx_fixture.sh.
//
// HOT PATH (pick and everything it calls): no tables, closures or strings are created, no TSTL lualib
// helpers are used (spec/balance/emitted_spec.lua checks the emitted Lua); only hash keys are read
// byte by byte. Costs per pick: round robin and least_conn O(n) over the tier with one
// state.available call per peer (as nginx); ip_hash/hash/random O(log n) per candidate; consistent
// hash O(log points + group size). spec/balance/bench_pick.lua measures them.
//
// Availability (passive max_fails/fail_timeout, active checks, max_conns) is the caller's PeerState;
// "down" is PeerInit.down (the server's `down` flag) and is checked here. nginx's lone server (one
// primary, no backup: `single`) ignores max_fails; the caller's PeerState applies that rule (set.single).
//
// A `balancer NAME` that cannot be used where the set is built (NAME not registered in this Lua VM, its
// arguments refused, its build raised) gives a round-robin set with set.pickerProblem saying why: stored
// upstreams keep routing (registry/build.ts logs it); writes were refused before (pipeline.ts).
import { CHASH } from "./chash";
import { HASH, IP_HASH } from "./hash";
import { LEAST_CONN } from "./least_conn";
import { resolvePicker } from "./pickers";
import { RANDOM, RANDOM_TWO } from "./random";
import { noteFailure, randomStart, ROUND_ROBIN } from "./swrr";
import type { PeerInit, PeerOptions, PeerSet, PeerState, Picker, Tried } from "./types";

/**
 * Pick a peer for one try of a request: its global index gi (1..total), or 0 when none is usable (the
 * caller fails the try: nginx's "no live upstreams"). `tried`: the gi already tried by this request
 * (undefined on the first try). `key`: ip_hash: the client address text; hash: the evaluated key
 * (empty or undefined: round robin, as nginx); a `balancer` with key=: its evaluated key; ignored otherwise.
 * Never raises for a set built by buildPeerSet with a built-in method. Mutates the picker's per-worker state.
 * The dispatch is one call through the set's picker (types.ts Picker): no allocation, no closure.
 */
function pick(set: PeerSet, state: PeerState, tried: Tried, key: string | undefined): number {
    return set.picker.pick(set, state, tried, key);
}

/** The picker of one of nginx's methods (a `balancer` is resolved by name in buildPeerSet). */
function methodPicker(opts: PeerOptions): Picker {
    const m = opts.method;
    if (m === "round_robin" || m === "balancer") return ROUND_ROBIN;
    if (m === "least_conn") return LEAST_CONN;
    if (m === "ip_hash") return IP_HASH;
    if (m === "hash") return opts.hashConsistent ? CHASH : HASH;
    if (m === "random") return opts.randomTwo ? RANDOM_TWO : RANDOM;
    return error("bad argument #2 to 'buildPeerSet' (unknown method '" + tostring(m) + "')", 3);
}

/** The ring arrays of every set that is not `hash ... consistent` (never written: buildRing makes its own). */
const NO_RING: number[] = [];

/**
 * The read-only arrays of built sets (weights, down, max_fails, fail_timeout, max_conns, weight ranges), shared
 * by content: most upstreams have default parameters, so thousands of sets hold the same few arrays, which
 * stay in the CPU's cache when requests spread over them. Weak values: an array no set uses is collected.
 * Nothing writes to these arrays after buildPeerSet (the per-worker WRR state is balCurrent/balEffective).
 */
const SHARED: LuaTable<string, unknown[]> = setmetatable(new LuaTable<string, unknown[]>(), { __mode: "v" }) as LuaTable<string, unknown[]>;

function share<T>(tag: string, arr: T[], key: string): T[] {
    const k = tag + key;
    const found = SHARED.get(k);
    if (found !== undefined) return found as T[];
    SHARED.set(k, arr);
    return arr;
}

function shareNumbers(tag: string, arr: number[]): number[] {
    return share(tag, arr, table.concat(arr, ","));
}

function shareFlags(tag: string, arr: boolean[]): boolean[] {
    const parts: string[] = [];
    for (let i = 1; i <= arr.length; i++) parts[i - 1] = arr[i - 1] ? "1" : "0";
    return share(tag, arr, table.concat(parts));
}

/**
 * Build the peer set of one upstream version: tiers, smooth WRR state (from a random point of its cycle
 * unless opts.noRandomStart, so workers do not move in lock-step), weight ranges, and for
 * `hash ... consistent` the ring. Peers keep body order; primaries get gi 1..nPrimary, backups
 * nPrimary+1..total. An empty list gives a set whose pick always returns 0.
 * Contract: the input is a validated record's peers. A weight that is not an integer >= 1 or an unknown
 * method is a caller's bug and raises.
 */
function buildPeerSet(peers: PeerInit[], opts: PeerOptions): PeerSet {
    let picker = methodPicker(opts);
    let config: unknown = undefined;
    let problem: string | undefined;
    if (opts.method === "balancer") {
        const [p, c] = resolvePicker(opts.picker ?? "", opts.pickerArgs);
        if (p !== undefined) {
            picker = p;
            config = c;
        } else {
            problem = c as string; // not registered here, or arguments refused: round robin, the caller logs it
        }
    }
    const count = peers.length;
    const set: PeerSet = {
        total: count,
        nPrimary: 0,
        ids: [],
        hosts: [],
        ports: [],
        weights: [],
        maxFails: [],
        failTimeouts: [],
        maxConns: [],
        down: [],
        single: false,
        tries: 0,
        totalWeight: 0,
        picker,
        data: undefined,
        wantsOutcome: false,
        balCurrent: [],
        balEffective: [],
        balStart: [],
        balRingHash: NO_RING,
        balRingGroup: NO_RING,
        balRingSize: 0,
        balConns: picker === LEAST_CONN ? [] : NO_RING,
        balGroupFirst: NO_RING,
        balGroupNext: NO_RING,
    };
    const servers: string[] = [];
    let gi = 0;
    // two passes over the body: primaries, then backups
    for (let pass = 0; pass < 2; pass++) {
        const wantBackup = pass === 1;
        for (let i = 1; i <= count; i++) {
            const p = peers[i - 1];
            if ((p.backup === true) !== wantBackup) continue;
            const w = p.weight;
            if (typeof w !== "number" || w < 1 || math.floor(w) !== w) {
                error("bad argument #1 to 'buildPeerSet' (peer " + tostring(p.id) + ": weight must be an integer >= 1)", 2);
            }
            gi = gi + 1;
            set.ids[gi - 1] = p.id;
            set.hosts[gi - 1] = p.host;
            set.ports[gi - 1] = p.port;
            set.weights[gi - 1] = w;
            set.maxFails[gi - 1] = p.maxFails;
            set.failTimeouts[gi - 1] = p.failTimeout;
            set.maxConns[gi - 1] = p.maxConns;
            set.down[gi - 1] = p.down === true;
            set.balCurrent[gi - 1] = 0;
            set.balEffective[gi - 1] = w;
            if (picker === LEAST_CONN) set.balConns[gi - 1] = 0;
            servers[gi - 1] = p.server ?? p.id;
            if (!wantBackup) {
                set.balStart[gi - 1] = set.totalWeight;
                set.totalWeight = set.totalWeight + w;
                set.nPrimary = gi;
            }
            if (p.down !== true) set.tries = set.tries + 1;
        }
    }
    set.single = set.nPrimary === 1 && count === 1;
    set.weights = shareNumbers("w", set.weights);
    set.maxFails = shareNumbers("f", set.maxFails);
    set.failTimeouts = shareNumbers("t", set.failTimeouts);
    set.maxConns = shareNumbers("c", set.maxConns);
    set.down = shareFlags("d", set.down);
    set.balStart = shareNumbers("s", set.balStart);
    const build = picker.build;
    if (build !== undefined) {
        const [ok, data] = pcall(build, set, config, servers);
        if (ok) {
            set.data = data;
        } else {
            // a registered module's bug (the built-in ones do not raise for a valid set): round robin instead
            problem = `balancer "${picker.name}": its build failed: ${tostring(data)}`;
            set.picker = ROUND_ROBIN;
        }
    }
    set.wantsOutcome = set.picker.outcome !== undefined;
    set.pickerProblem = problem;
    if (opts.noRandomStart !== true) {
        randomStart(set, 1, set.nPrimary);
        randomStart(set, set.nPrimary + 1, set.total);
    }
    return set;
}

export { buildPeerSet, pick, noteFailure };
export type { PeerInit, PeerOptions, PeerSet, PeerState, Picker, Tried };
