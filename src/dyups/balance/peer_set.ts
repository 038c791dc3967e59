/** @noSelfInFile */
// The peer set of one upstream version and its pickers, with nginx 1.22's semantics
// (ngx_http_upstream_round_robin.c, _ip_hash_, _hash_, _least_conn_, _random_module.c).
// Pure: no ngx.* use (math.random only), tested under plain LuaJIT (spec/balance).
//
// Phases: buildPeerSet runs wherever a version is built (O(n), plus O(160·Σweight) for the ring of
// `hash ... consistent`: ~45 ms for 1000 servers of weight 1-3; never per request). pick runs in
// balancer_by_lua on every try. Verified pick for pick against a real nginx 1.22 (ip_hash over IPv4
// and IPv6 clients, hash, hash consistent, retries after a failing server, round-robin order):
// spec/balance/nginx_parity_spec.lua with the fixture recorded by spec/balance/nginx_fixture.sh.
//
// INDEX CONVENTION. A peer is named by its global index `gi`, a Lua 1-based index: primaries are
// 1..nPrimary in body order, backups nPrimary+1..total in body order. Every per-peer array of a PeerSet
// (public and private) is a Lua sequence holding peer gi at Lua index gi: Lua code reads `set.hosts[gi]`;
// TypeScript reads `set.hosts[gi - 1]` (TSTL emits exactly `set.hosts[gi]`) or casts the array to
// `LuaTable<number, T>` and calls `.get(gi)`. `tried` is keyed by gi; pick returns gi, or 0 for none.
//
// HOT PATH (pick and everything it calls): no tables, closures or strings are created, no TSTL lualib
// helpers are used (spec/balance/emitted_spec.lua checks the emitted Lua); only hash keys are read
// byte by byte. Costs per pick: round robin and least_conn O(n) over the tier with one
// state.available call per peer (as nginx); ip_hash/hash/random O(log n) per candidate; consistent
// hash O(log points + group size). spec/balance/bench_pick.lua measures them.
//
// STATE. Smooth WRR's current/effective weights live in the set: per worker, like nginx without a `zone`.
// Availability (passive max_fails/fail_timeout, active checks, max_conns) is the caller's PeerState;
// "down" is PeerInit.down (the server's `down` flag) and is checked here. As in nginx, once a request
// has tried a backup its later tries stay in the backup tier (nginx switches rrp->peers to the backup
// list); this is read from `tried`.
//
// Differences from nginx, all deliberate:
// - pick keeps no per-request state besides `tried`: on a retry, hash/ip_hash/consistent hash walk their
//   candidate sequence again from the key (the same sequence as nginx; earlier candidates are skipped
//   again, the tried ones because they are in `tried`). For hash and ip_hash nginx's 20-candidate
//   budget then also counts the candidate each earlier try used, so the round-robin fallback can come
//   one candidate sooner per retry; for consistent hash the count is the same. random's budget
//   restarts on each try.
// - nginx's lone server (one primary, no backup: `single`) ignores max_fails. Here PeerState owns all
//   availability, so it must apply that rule itself if wanted; set.single tells it.
// - Effective weight: nginx lowers it on a failure (weight / max_fails) and raises it by 1 per pick
//   back to weight. Picks do the raising; the log phase may call noteFailure(set, gi) to lower it
//   (per worker). Without noteFailure, effective weight stays at weight.
// - least_conn reads each peer's connection count once per pick and reuses it for the tie-break pass.
// - consistent hash: points are built from PeerInit.server (the address as written) when given, else
//   from the id; identical point hashes of different servers keep the lowest server (nginx: qsort order).

import { crc32, crc32Final, crc32Update, crc32UpdateByte, crc32UpdateU32LE } from "./crc32";
import { addrBytes, parseClientAddr } from "./ip_addr";

export interface PeerInit {
    /** "host:port" or "unix:/path": address identity (keys shared state). */
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
    method: "round_robin" | "ip_hash" | "hash" | "least_conn" | "random";
    hashConsistent: boolean;
    randomTwo: boolean;
    /** Tests: start smooth WRR from nginx's zero state instead of a random point of its cycle. */
    noRandomStart?: boolean;
}

/** Availability is owned by the caller (shared-memory passive health, active checks, max_conns): */
/** @noSelf */
export interface PeerState {
    /** false while the peer is marked failed (max_fails within fail_timeout), checked down, or at max_conns */
    available(set: PeerSet, gi: number): boolean;
    /** active connections to this peer across workers (least_conn, random two) */
    conns(set: PeerSet, gi: number): number;
}

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
    backup: boolean[];
    /** nginx's peers->single: exactly one primary and no backup (hash methods then use round robin). */
    single: boolean;
    /** nginx's peer.tries: servers not marked down (primary + backup); retries = tries - 1. */
    tries: number;
    /** Σ weight of the primaries, down ones included (nginx's total_weight: the hash modulus). */
    totalWeight: number;

    // ---- picker state: private to this module, precomputed by buildPeerSet ----
    /** method code (KIND_*) */
    balKind: number;
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
    /** least_conn: connection counts read by the first pass of a pick (-1: unusable), reused by the tie pass */
    balConns: number[];
    /** consistent hash groups (peers sharing a server text): first member gi; next member gi or 0 */
    balGroupFirst: number[];
    balGroupNext: number[];
}

const KIND_RR = 1;
const KIND_IP_HASH = 2;
const KIND_HASH = 3;
const KIND_CHASH = 4;
const KIND_LEAST_CONN = 5;
const KIND_RANDOM = 6;
const KIND_RANDOM_TWO = 7;

/** nginx gives up hashing after this many unusable candidates (`++tries > 20`) and uses round robin. */
const HASH_TRIES = 20;
/** ketama points per unit of weight (ngx_http_upstream_init_chash) */
const CHASH_POINTS = 160;
/** warm-up budget of the random swrr start, in peer visits (build time) */
const WARMUP_VISITS = 250000;

const random = math.random;
const floor = math.floor;
const byte = string.byte;
const sub = string.sub;
const lower = string.lower;

/** "1".."21": the REHASH prefix of nginx's hash (`ngx_sprintf(buf, "%ui", rehash)`), built once. */
const REHASH_TEXT: string[] = [];
for (let i = 1; i <= HASH_TRIES + 1; i++) REHASH_TEXT[i - 1] = tostring(i);

// ---------------------------------------------------------------------------------------------------
// Smooth weighted round robin (ngx_http_upstream_get_peer)

/** One smooth WRR step over the usable peers first..last; returns the chosen gi or 0. */
function swrrRange(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, first: number, last: number): number {
    const down = set.down;
    const weights = set.weights;
    const current = set.balCurrent;
    const effective = set.balEffective;
    let best = 0;
    let bestCurrent = 0;
    let total = 0;
    for (const gi of $range(first, last)) {
        if (down[gi - 1]) continue;
        if (tried !== undefined && tried.get(gi) === true) continue;
        if (!state.available(set, gi)) continue;
        const e = effective[gi - 1];
        const c = current[gi - 1] + e;
        current[gi - 1] = c;
        total = total + e;
        if (e < weights[gi - 1]) effective[gi - 1] = e + 1;
        if (best === 0 || c > bestCurrent) {
            best = gi;
            bestCurrent = c;
        }
    }
    if (best !== 0) current[best - 1] = bestCurrent - total;
    return best;
}

/** True when this request already tried a backup: nginx then stays in the backup tier. */
function inBackupTier(set: PeerSet, tried: LuaTable<number, boolean> | undefined): boolean {
    if (tried === undefined) return false;
    for (const gi of $range(set.nPrimary + 1, set.total)) {
        if (tried.get(gi) === true) return true;
    }
    return false;
}

/** A picker over the global indexes first..last (one tier). */
type RangePick = (this: void, set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, first: number, last: number) => number;

/**
 * nginx's tiers, shared by round robin and least_conn: primaries, then (all unusable) the backup tier; a
 * request that already tried a backup stays there. `range` is a module-level function: nothing is allocated.
 */
function tiered(range: RangePick, set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined): number {
    const nPrimary = set.nPrimary;
    const total = set.total;
    if (nPrimary < total && inBackupTier(set, tried)) return range(set, state, tried, nPrimary + 1, total);
    const gi = range(set, state, tried, 1, nPrimary);
    if (gi !== 0 || nPrimary === total) return gi;
    return range(set, state, tried, nPrimary + 1, total);
}

/** ngx_http_upstream_get_round_robin_peer */
function rrPick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined): number {
    return tiered(swrrRange, set, state, tried);
}

// ---------------------------------------------------------------------------------------------------
// least_conn (ngx_http_upstream_get_least_conn_peer)

function leastConnRange(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, first: number, last: number): number {
    const down = set.down;
    const weights = set.weights;
    const conns = set.balConns;
    let best = 0;
    let bestConns = 0;
    let bestWeight = 1;
    let many = false;
    for (const gi of $range(first, last)) {
        conns[gi - 1] = -1;
        if (down[gi - 1]) continue;
        if (tried !== undefined && tried.get(gi) === true) continue;
        if (!state.available(set, gi)) continue;
        const c = state.conns(set, gi);
        conns[gi - 1] = c;
        const w = weights[gi - 1];
        // conns/weight compared by cross-multiplication, like nginx
        if (best === 0 || c * bestWeight < bestConns * w) {
            best = gi;
            bestConns = c;
            bestWeight = w;
            many = false;
        } else if (c * bestWeight === bestConns * w) {
            many = true;
        }
    }
    if (best === 0 || !many) return best;

    // Several peers share the least weighted count: smooth WRR among them, from the first one on.
    // nginx re-reads each peer under its lock; the counts of the first pass are the same snapshot
    // here, and re-reading them from shared memory would double the cost of the pick.
    const current = set.balCurrent;
    const effective = set.balEffective;
    const first0 = best;
    let total = 0;
    for (const gi of $range(first0, last)) {
        const c = conns[gi - 1];
        if (c < 0) continue;
        const w = weights[gi - 1];
        if (c * bestWeight !== bestConns * w) continue;
        const e = effective[gi - 1];
        current[gi - 1] = current[gi - 1] + e;
        total = total + e;
        if (e < w) effective[gi - 1] = e + 1;
        if (current[gi - 1] > current[best - 1]) best = gi;
    }
    current[best - 1] = current[best - 1] - total;
    return best;
}

function leastConnPick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined): number {
    return tiered(leastConnRange, set, state, tried);
}

// ---------------------------------------------------------------------------------------------------
// Weighted walk shared by ip_hash, hash and random

/** The primary whose weight range holds w (0 <= w < totalWeight): nginx's `while (w >= peer->weight)` walk. */
function primaryAt(set: PeerSet, w: number): number {
    const start = set.balStart;
    let lo = 1;
    let hi = set.nPrimary;
    while (lo < hi) {
        const mid = floor((lo + hi + 1) / 2);
        if (start[mid - 1] <= w) {
            lo = mid;
        } else {
            hi = mid - 1;
        }
    }
    return lo;
}

function usable(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, gi: number): boolean {
    if (set.down[gi - 1]) return false;
    if (tried !== undefined && tried.get(gi) === true) return false;
    return state.available(set, gi);
}

// ---------------------------------------------------------------------------------------------------
// ip_hash (ngx_http_upstream_get_ip_hash_peer)

function ipHashPick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, key: string | undefined): number {
    if (set.single || set.nPrimary === 0) return rrPick(set, state, tried);
    const len = parseClientAddr(key);
    const totalWeight = set.totalWeight;
    let hash = 89;
    let tries = 0;
    for (;;) {
        for (const i of $range(1, len)) {
            hash = (hash * 113 + addrBytes[i - 1]) % 6271;
        }
        const gi = primaryAt(set, hash % totalWeight);
        if (usable(set, state, tried, gi)) return gi;
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

// ---------------------------------------------------------------------------------------------------
// hash KEY (ngx_http_upstream_get_hash_peer): Cache::Memcached compatible

function hashPick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, key: string | undefined): number {
    if (set.single || set.nPrimary === 0 || key === undefined || key === "") return rrPick(set, state, tried);
    const totalWeight = set.totalWeight;
    let hash = 0;
    let tries = 0;
    let rehash = 0;
    for (;;) {
        // ((crc32([REHASH] KEY) >> 16) & 0x7fff) + PREV_HASH, REHASH omitted the first time
        let crc = -1;
        if (rehash > 0) crc = crc32Update(crc, REHASH_TEXT[rehash - 1]);
        crc = crc32Final(crc32Update(crc, key));
        hash = hash + ((crc >>> 16) & 0x7fff);
        rehash = rehash + 1;
        const gi = primaryAt(set, hash % totalWeight);
        if (usable(set, state, tried, gi)) return gi;
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

// ---------------------------------------------------------------------------------------------------
// hash KEY consistent (ngx_http_upstream_get_chash_peer)

/** ngx_http_upstream_find_chash_point: 0-based index of the first point >= hash (ringSize when none). */
function findPoint(set: PeerSet, hash: number): number {
    const points = set.balRingHash;
    let i = 0;
    let j = set.balRingSize;
    while (i < j) {
        const k = floor((i + j) / 2);
        const h = points[k];
        if (hash > h) {
            i = k + 1;
        } else if (hash < h) {
            j = k;
        } else {
            return k;
        }
    }
    return i;
}

/** Smooth WRR among the usable members of group g (peers sharing one server text); gi or 0. */
function swrrGroup(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, g: number): number {
    const down = set.down;
    const weights = set.weights;
    const current = set.balCurrent;
    const effective = set.balEffective;
    const next = set.balGroupNext;
    let best = 0;
    let bestCurrent = 0;
    let total = 0;
    let gi = set.balGroupFirst[g - 1];
    while (gi !== 0) {
        if (!down[gi - 1] && !(tried !== undefined && tried.get(gi) === true) && state.available(set, gi)) {
            const e = effective[gi - 1];
            const c = current[gi - 1] + e;
            current[gi - 1] = c;
            total = total + e;
            if (e < weights[gi - 1]) effective[gi - 1] = e + 1;
            if (best === 0 || c > bestCurrent) {
                best = gi;
                bestCurrent = c;
            }
        }
        gi = next[gi - 1];
    }
    if (best !== 0) current[best - 1] = bestCurrent - total;
    return best;
}

function chashPick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, key: string | undefined): number {
    const size = set.balRingSize;
    if (set.single || size === 0 || key === undefined || key === "") return rrPick(set, state, tried);
    const groups = set.balRingGroup;
    let point = findPoint(set, crc32(key));
    let tries = 0;
    for (;;) {
        const gi = swrrGroup(set, state, tried, groups[point % size]);
        if (gi !== 0) return gi;
        point = point + 1;
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

// ---------------------------------------------------------------------------------------------------
// random [two least_conn] (ngx_http_upstream_get_random_peer, _get_random2_peer)

function randomPick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined): number {
    // nginx 1.22 tests peers->single here, later versions peers->number < 2: the same without backups
    if (set.nPrimary < 2) return rrPick(set, state, tried);
    const totalWeight = set.totalWeight;
    let tries = 0;
    for (;;) {
        const gi = primaryAt(set, random(0, totalWeight - 1));
        if (usable(set, state, tried, gi)) return gi;
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

function random2Pick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined): number {
    if (set.nPrimary < 2) return rrPick(set, state, tried);
    const totalWeight = set.totalWeight;
    const weights = set.weights;
    let prev = 0;
    let tries = 0;
    for (;;) {
        const gi = primaryAt(set, random(0, totalWeight - 1));
        if (gi !== prev && usable(set, state, tried, gi)) {
            if (prev !== 0) {
                // the second one wins ties, like nginx
                if (state.conns(set, gi) * weights[prev - 1] > state.conns(set, prev) * weights[gi - 1]) return prev;
                return gi;
            }
            prev = gi;
        }
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

// ---------------------------------------------------------------------------------------------------
// Public hot path

/**
 * Pick a peer for one try of a request: its global index gi (1..total), or 0 when none is usable (the
 * caller fails the try: nginx's "no live upstreams"). `tried`: the gi already tried by this request
 * (undefined on the first try). `key`: ip_hash: the client address text; hash: the evaluated key
 * (empty or undefined: round robin, as nginx); ignored otherwise. Never raises for a set built by
 * buildPeerSet. Mutates the set's smooth WRR state (per worker).
 */
function pick(set: PeerSet, state: PeerState, tried: LuaTable<number, boolean> | undefined, key: string | undefined): number {
    const kind = set.balKind;
    if (kind === KIND_RR) return rrPick(set, state, tried);
    if (kind === KIND_LEAST_CONN) return leastConnPick(set, state, tried);
    if (kind === KIND_CHASH) return chashPick(set, state, tried, key);
    if (kind === KIND_HASH) return hashPick(set, state, tried, key);
    if (kind === KIND_IP_HASH) return ipHashPick(set, state, tried, key);
    if (kind === KIND_RANDOM) return randomPick(set, state, tried);
    return random2Pick(set, state, tried);
}

/**
 * A try on peer gi failed: lower its effective weight by weight / max_fails (nginx's
 * free_round_robin_peer), so smooth WRR sends it less traffic until picks raise it back. Per worker.
 */
function noteFailure(set: PeerSet, gi: number): void {
    if (set.single) return;
    const maxFails = set.maxFails[gi - 1];
    if (maxFails <= 0) return;
    let e = set.balEffective[gi - 1] - floor(set.weights[gi - 1] / maxFails);
    if (e < 0) e = 0;
    set.balEffective[gi - 1] = e;
}

// ---------------------------------------------------------------------------------------------------
// Build (once per upstream version; may allocate freely)

/** crc32 state after "HOST \0 PORT" of a server text, split like ngx_http_upstream_init_chash. */
function serverBaseHash(server: string): number {
    const len = server.length;
    let crc = -1;
    if (len >= 5 && lower(sub(server, 1, 5)) === "unix:") {
        crc = crc32Update(crc, sub(server, 6));
        return crc32UpdateByte(crc, 0);
    }
    let hostLen = len;
    let portFrom = 0; // 0: no port
    for (let j = 0; j < len; j++) {
        const c = byte(server, len - j);
        if (c === 58) {
            // ":" with only digits after it
            hostLen = len - j - 1;
            portFrom = len - j + 1;
            break;
        }
        if (c < 48 || c > 57) break;
    }
    crc = crc32Update(crc, sub(server, 1, hostLen));
    crc = crc32UpdateByte(crc, 0);
    if (portFrom > 0) crc = crc32Update(crc, sub(server, portFrom));
    return crc;
}

/**
 * Sort the points (hashes[0..n-1], unsigned 32-bit, with their owners) by hash: a stable LSD radix sort,
 * two passes of 16 bits. O(n); table.sort took ~0.1 s for the 320k points of 1000 servers.
 */
function sortPoints(hashes: number[], owners: number[], n: number): void {
    const tmpHashes: number[] = [];
    const tmpOwners: number[] = [];
    for (let i = 0; i < n; i++) {
        // filled in order first, so the scattered writes of the pass land in the array part
        tmpHashes[i] = 0;
        tmpOwners[i] = 0;
    }
    radixPass(hashes, owners, tmpHashes, tmpOwners, n, 0);
    radixPass(tmpHashes, tmpOwners, hashes, owners, n, 16);
}

function radixPass(fromH: number[], fromO: number[], toH: number[], toO: number[], n: number, shift: number): void {
    const count: number[] = [];
    for (let d = 0; d < 65536; d++) count[d] = 0;
    for (let i = 0; i < n; i++) {
        const d = (fromH[i] >>> shift) & 0xffff;
        count[d] = count[d] + 1;
    }
    let at = 0;
    for (let d = 0; d < 65536; d++) {
        const c = count[d];
        count[d] = at;
        at = at + c;
    }
    for (let i = 0; i < n; i++) {
        const h = fromH[i];
        const d = (h >>> shift) & 0xffff;
        const to = count[d];
        count[d] = to + 1;
        toH[to] = h;
        toO[to] = fromO[i];
    }
}

/** The ketama ring of ngx_http_upstream_init_chash over the primaries, grouped by server text. */
function buildRing(set: PeerSet, servers: string[]): void {
    const groupOf = new LuaTable<string, number>();
    const groupFirst: number[] = [];
    const groupNext: number[] = [];
    const groupLast: number[] = [];
    const groupWeight: number[] = [];
    const groupText: string[] = [];
    let nGroups = 0;
    for (let gi = 1; gi <= set.total; gi++) groupNext[gi - 1] = 0;
    for (let gi = 1; gi <= set.nPrimary; gi++) {
        const text = servers[gi - 1];
        const w = set.weights[gi - 1];
        let g = groupOf.get(text);
        if (g === undefined) {
            nGroups = nGroups + 1;
            g = nGroups;
            groupOf.set(text, g);
            groupFirst[g - 1] = gi;
            groupWeight[g - 1] = w;
            groupText[g - 1] = text;
        } else {
            groupNext[groupLast[g - 1] - 1] = gi;
            if (w > groupWeight[g - 1]) groupWeight[g - 1] = w;
        }
        groupLast[g - 1] = gi;
    }
    // Every peer of a group has the same point sequence (same server text), so the union of their
    // 160*weight points is the first 160*max(weight) of it; nginx generates them all and de-duplicates.
    const hashes: number[] = [];
    const owners: number[] = [];
    let n = 0;
    for (let g = 1; g <= nGroups; g++) {
        const base = serverBaseHash(groupText[g - 1]);
        const npoints = groupWeight[g - 1] * CHASH_POINTS;
        let prev = 0;
        for (let j = 0; j < npoints; j++) {
            const hash = crc32Final(crc32UpdateU32LE(base, prev));
            hashes[n] = hash;
            owners[n] = g;
            n = n + 1;
            prev = hash;
        }
    }
    sortPoints(hashes, owners, n);

    // equal hashes: the first one (lowest group) stays; nginx's qsort leaves that choice unspecified
    const ringHash: number[] = [];
    const ringGroup: number[] = [];
    let size = 0;
    let last = -1;
    for (let i = 0; i < n; i++) {
        const hash = hashes[i];
        if (hash !== last) {
            ringHash[size] = hash;
            ringGroup[size] = owners[i];
            size = size + 1;
            last = hash;
        }
    }
    set.balRingHash = ringHash;
    set.balRingGroup = ringGroup;
    set.balRingSize = size;
    set.balGroupFirst = groupFirst;
    set.balGroupNext = groupNext;
}

/** Advance smooth WRR over the non-down peers first..last by a random number of steps < their Σ weight. */
function randomStart(set: PeerSet, first: number, last: number): void {
    let weight = 0;
    let count = 0;
    for (let gi = first; gi <= last; gi++) {
        if (!set.down[gi - 1]) {
            weight = weight + set.weights[gi - 1];
            count = count + 1;
        }
    }
    if (count < 2) return;
    let steps = random(0, weight - 1);
    const cap = floor(WARMUP_VISITS / count);
    if (steps > cap) steps = cap;
    const current = set.balCurrent;
    for (let s = 1; s <= steps; s++) {
        let best = 0;
        for (let gi = first; gi <= last; gi++) {
            if (!set.down[gi - 1]) {
                current[gi - 1] = current[gi - 1] + set.weights[gi - 1];
                if (best === 0 || current[gi - 1] > current[best - 1]) best = gi;
            }
        }
        current[best - 1] = current[best - 1] - weight;
    }
}

/** The ring arrays of every set that is not `hash ... consistent` (never written: buildRing makes its own). */
const NO_RING: number[] = [];

function kindOf(opts: PeerOptions): number {
    const m = opts.method;
    if (m === "round_robin") return KIND_RR;
    if (m === "least_conn") return KIND_LEAST_CONN;
    if (m === "ip_hash") return KIND_IP_HASH;
    if (m === "hash") return opts.hashConsistent ? KIND_CHASH : KIND_HASH;
    if (m === "random") return opts.randomTwo ? KIND_RANDOM_TWO : KIND_RANDOM;
    return error("bad argument #2 to 'buildPeerSet' (unknown method '" + tostring(m) + "')", 3);
}

/**
 * Build the peer set of one upstream version: tiers, smooth WRR state (from a random point of its cycle
 * unless opts.noRandomStart, so workers do not move in lock-step), weight ranges, and for
 * `hash ... consistent` the ring. Peers keep body order; primaries get gi 1..nPrimary, backups
 * nPrimary+1..total. An empty list gives a set whose pick always returns 0.
 * Raises (caller's bug) on a weight that is not an integer >= 1 or an unknown method; the input is
 * expected to be validated already.
 */
function buildPeerSet(peers: PeerInit[], opts: PeerOptions): PeerSet {
    const kind = kindOf(opts);
    const list = peers as unknown as LuaTable<number, PeerInit>;
    const count = list.length();
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
        backup: [],
        single: false,
        tries: 0,
        totalWeight: 0,
        balKind: kind,
        balCurrent: [],
        balEffective: [],
        balStart: [],
        balRingHash: NO_RING,
        balRingGroup: NO_RING,
        balRingSize: 0,
        balConns: [],
        balGroupFirst: NO_RING,
        balGroupNext: NO_RING,
    };
    const servers: string[] = [];
    let gi = 0;
    // two passes over the body: primaries, then backups
    for (let pass = 0; pass < 2; pass++) {
        const wantBackup = pass === 1;
        for (let i = 1; i <= count; i++) {
            const p = list.get(i);
            if ((p.backup === true) !== wantBackup) continue;
            const w = p.weight;
            if (typeof w !== "number" || w < 1 || floor(w) !== w) {
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
            set.backup[gi - 1] = wantBackup;
            set.balCurrent[gi - 1] = 0;
            set.balEffective[gi - 1] = w;
            set.balConns[gi - 1] = 0;
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
    if (kind === KIND_CHASH) buildRing(set, servers);
    if (opts.noRandomStart !== true) {
        randomStart(set, 1, set.nPrimary);
        randomStart(set, set.nPrimary + 1, set.total);
    }
    return set;
}

export { buildPeerSet, pick, noteFailure };
