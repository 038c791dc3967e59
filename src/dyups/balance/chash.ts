/** @noSelfInFile */
// hash KEY consistent (ngx_http_upstream_init_chash, ngx_http_upstream_get_chash_peer): a ketama ring of
// 160 points per unit of weight per server text; the key's crc32 finds the first point at or after it, and
// the server group there (peers sharing a server text: a name with several addresses) picks by smooth WRR.
// An unusable group moves to the next point; after 20, or for a lone server or an empty key, round robin.
// Pure. Lookup is hot (O(log points + group size), no allocation); the ring is built once per version
// (O(160·Σweight), ~45 ms for 1000 servers of weight 1-3).
//
// Differences from nginx, deliberate: points are built from PeerInit.server (the address as written) when
// given, else from the id; identical point hashes of different servers keep the lowest server (nginx: qsort
// order, unspecified). On a retry the walk restarts from the key, with the same count as nginx.
import { crc32, crc32Final, crc32Update, crc32UpdateByte, crc32UpdateU32LE } from "./crc32";
import { rrPick, swrrStep, USABLE } from "./swrr";
import type { PeerSet, PeerState, Picker, Tried } from "./types";
import { HASH_TRIES } from "./walk";

/** ketama points per unit of weight */
const CHASH_POINTS = 160;

/** 0-based index of the first point >= hash (ringSize when none): ngx_http_upstream_find_chash_point. */
function findPoint(set: PeerSet, hash: number): number {
    const points = set.balRingHash;
    let i = 0;
    let j = set.balRingSize;
    while (i < j) {
        const k = math.floor((i + j) / 2);
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

function chashPick(set: PeerSet, state: PeerState, tried: Tried, key: string | undefined): number {
    const size = set.balRingSize;
    if (set.single || size === 0 || key === undefined || key === "") return rrPick(set, state, tried);
    const groups = set.balRingGroup;
    const first = set.balGroupFirst;
    const link = set.balGroupNext;
    const total = set.total;
    let point = findPoint(set, crc32(key));
    let tries = 0;
    for (;;) {
        const gi = swrrStep(set, state, tried, first[groups[point % size] - 1], total, link, USABLE);
        if (gi !== 0) return gi;
        point = point + 1;
        tries = tries + 1;
        if (tries > HASH_TRIES) return rrPick(set, state, tried);
    }
}

// ---------------------------------------------------------------------------------------------------
// Build time

const byte = string.byte;
const sub = string.sub;
const lower = string.lower;

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

/** Builds the ring over the primaries, grouped by server text (`servers[gi - 1]`), into the set. */
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

/** The ring is the version's state: built from the server texts (nginx's peer->server). */
function chashBuild(set: PeerSet, _config: unknown, servers: string[]): unknown {
    buildRing(set, servers);
    return undefined;
}

const CHASH: Picker = { name: "hash consistent", build: chashBuild, pick: chashPick };

export { chashPick, buildRing, CHASH };
