/** @noSelfInFile */
// The digest of a routing state: XOR of one term per upstream revision. The store keeps the digest of what it
// holds (store/command_log.ts, under the write lease); each worker keeps the digest of what it routes by
// (registry/sync.ts). Equal digests: identical state. Any phase; one crc32 of a short string per term.

/** The digest term of one upstream revision. */
export function revisionHash(name: string, rev: number): number {
    return ngx.crc32_short(`${name}:${rev}`);
}
