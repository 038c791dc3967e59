/** @noSelfInFile */
// CRC-32 (IEEE 802.3, reflected polynomial 0xEDB88320; the zlib/ngx_crc32_long value) in pure LuaJIT.
// Owns: one 256-entry table built at load. Phases: any; no ngx.* use, no allocation per call.
//
// Values: the running state (`crc32Init`, `crc32Update*`) is a signed 32-bit integer as LuaJIT's `bit`
// functions return it (TSTL compiles `^ & >>> ~` to bit.bxor/band/rshift/bnot with luaTarget "JIT");
// `crc32Final` turns it into the unsigned value 0..2^32-1 (`% 2^32` of a negative number is positive in
// Lua), which is what nginx compares, sorts and takes modulo of. Known values: crc32("") = 0,
// crc32("123456789") = 0xCBF43926.

const byte = string.byte;

const TABLE: number[] = [];
for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) {
        if ((c & 1) !== 0) {
            c = 0xedb88320 ^ (c >>> 1);
        } else {
            c = c >>> 1;
        }
    }
    TABLE[n] = c;
}

const TWO32 = 4294967296;

/** ngx_crc32_init: the state before any byte. */
function crc32Init(): number {
    return -1; // 0xffffffff as a signed 32-bit value
}

/** ngx_crc32_update over the bytes of `s` (all of them). O(#s). */
function crc32Update(crc: number, s: string): number {
    const len = s.length;
    for (let i = 1; i <= len; i++) {
        crc = TABLE[(crc ^ byte(s, i)) & 0xff] ^ (crc >>> 8);
    }
    return crc;
}

/** ngx_crc32_update over one byte value 0..255 (nginx's `(u_char *) "", 1` is crc32UpdateByte(crc, 0)). */
function crc32UpdateByte(crc: number, b: number): number {
    return TABLE[(crc ^ b) & 0xff] ^ (crc >>> 8);
}

/** ngx_crc32_update over the 4 bytes of an unsigned 32-bit value in little-endian order (nginx's prev_hash). */
function crc32UpdateU32LE(crc: number, v: number): number {
    crc = TABLE[(crc ^ v) & 0xff] ^ (crc >>> 8);
    crc = TABLE[(crc ^ (v >>> 8)) & 0xff] ^ (crc >>> 8);
    crc = TABLE[(crc ^ (v >>> 16)) & 0xff] ^ (crc >>> 8);
    crc = TABLE[(crc ^ (v >>> 24)) & 0xff] ^ (crc >>> 8);
    return crc;
}

/** ngx_crc32_final: the unsigned CRC value, 0..2^32-1. */
function crc32Final(crc: number): number {
    return ~crc % TWO32;
}

/** ngx_crc32_long(s): the unsigned CRC-32 of a whole string. */
function crc32(s: string): number {
    return crc32Final(crc32Update(-1, s));
}

export { crc32, crc32Init, crc32Update, crc32UpdateByte, crc32UpdateU32LE, crc32Final };
