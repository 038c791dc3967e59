/** @noSelfInFile */
// ip_hash (ngx_http_upstream_get_ip_hash_peer) and hash KEY (ngx_http_upstream_get_hash_peer, compatible
// with Cache::Memcached): a hash walks the primaries' weight ranges; an unusable candidate rehashes; after
// 20 unusable candidates, or for a lone server, no primaries or an empty key, round robin. Pure, hot: no
// allocation (the key's bytes are read in place; ip_addr.ts parses the client address into a scratch array).
//
// Difference from nginx, deliberate: no per-request state besides `tried`. On a retry the candidate
// sequence is walked again from the key (the same sequence; tried ones are skipped again), so nginx's
// 20-candidate budget also counts the candidates earlier tries used: the round-robin fallback can come one
// candidate sooner per retry.
import { crc32Final, crc32Update } from "./crc32";
import { addrBytes, parseClientAddr } from "./ip_addr";
import { rrPick } from "./swrr";
import type { PeerSet, PeerState, Picker, Tried } from "./types";
import { HASH_TRIES, primaryAt, usable } from "./walk";

/** "1".."21": the REHASH prefix of nginx's hash (`ngx_sprintf(buf, "%ui", rehash)`), built once. */
const REHASH_TEXT: string[] = [];
for (let i = 1; i <= HASH_TRIES + 1; i++) REHASH_TEXT[i - 1] = tostring(i);

/** `key`: the client address text ($remote_addr). */
function ipHashPick(set: PeerSet, state: PeerState, tried: Tried, key: string | undefined): number {
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

/** `key`: the evaluated hash key. */
function hashPick(set: PeerSet, state: PeerState, tried: Tried, key: string | undefined): number {
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

const IP_HASH: Picker = { name: "ip_hash", pick: ipHashPick };
const HASH: Picker = { name: "hash", pick: hashPick };

export { ipHashPick, hashPick, IP_HASH, HASH };
