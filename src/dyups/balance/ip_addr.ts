/** @noSelfInFile */
// Client address text -> the bytes nginx's ip_hash feeds into its hash (ngx_http_upstream_ip_hash_module.c):
// IPv4: the first 3 octets; IPv6: all 16 bytes (an IPv4-mapped "::ffff:a.b.c.d" is IPv6 to nginx too,
// when the listening socket is IPv6); anything else (a unix-socket client, no address, text that is not
// an address) is nginx's pseudo address {0, 0, 0}.
//
// Hot path (ip_hash pick): no allocation. The bytes go into one module-level scratch array that the
// caller reads right away; `addrBytes[i - 1]` in TS is Lua `addrBytes[i]`, i = 1..len. A zone suffix
// ("fe80::1%eth0") is ignored.

const byte = string.byte;

const DOT = 46; // "."
const COLON = 58; // ":"
const PERCENT = 37; // "%"

/** The scratch result: bytes 1..len (Lua indexes) of the last parseClientAddr. Read it before the next call. */
const addrBytes: number[] = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
/** IPv6 groups while parsing (8 x 16 bits). */
const groups: number[] = [0, 0, 0, 0, 0, 0, 0, 0];

function pseudo(): number {
    addrBytes[0] = 0;
    addrBytes[1] = 0;
    addrBytes[2] = 0;
    return 3;
}

function hexValue(c: number): number {
    if (c >= 48 && c <= 57) return c - 48; // 0-9
    if (c >= 97 && c <= 102) return c - 87; // a-f
    if (c >= 65 && c <= 70) return c - 55; // A-F
    return -1;
}

/**
 * Dotted quad starting at byte `i` of `s` and ending at `stop` (exclusive). Writes the 4 octets to
 * addrBytes[at .. at+3] (TS indexes). Returns false when it is not a valid dotted quad.
 */
function parseQuad(s: string, i: number, stop: number, at: number): boolean {
    let part = 0;
    let value = 0;
    let digits = 0;
    while (i < stop) {
        const c = byte(s, i);
        if (c >= 48 && c <= 57) {
            value = value * 10 + (c - 48);
            digits = digits + 1;
            if (digits > 3 || value > 255) return false;
        } else if (c === DOT) {
            if (digits === 0 || part === 3) return false;
            addrBytes[at + part] = value;
            part = part + 1;
            value = 0;
            digits = 0;
        } else {
            return false;
        }
        i = i + 1;
    }
    if (digits === 0 || part !== 3) return false;
    addrBytes[at + 3] = value;
    return true;
}

/** Parse an IPv6 text (s[1..stop-1]) into addrBytes[0..15]. False when invalid. */
function parseIPv6(s: string, stop: number): boolean {
    let n = 0; // groups parsed
    let gap = -1; // number of groups before "::", -1 when there is none
    let i = 1;
    if (byte(s, 1) === COLON) {
        if (stop <= 2 || byte(s, 2) !== COLON) return false;
        gap = 0;
        i = 3;
    }
    while (i < stop) {
        const start = i;
        let value = 0;
        let digits = 0;
        let h = hexValue(byte(s, i));
        while (h >= 0 && i < stop) {
            value = value * 16 + h;
            digits = digits + 1;
            i = i + 1;
            h = i < stop ? hexValue(byte(s, i)) : -1;
        }
        if (i < stop && byte(s, i) === DOT) {
            // embedded IPv4 in the last 32 bits
            if (n > 6 || !parseQuad(s, start, stop, 12)) return false;
            groups[n] = addrBytes[12] * 256 + addrBytes[13];
            groups[n + 1] = addrBytes[14] * 256 + addrBytes[15];
            n = n + 2;
            break;
        }
        if (digits === 0 || digits > 4 || n === 8) return false;
        groups[n] = value;
        n = n + 1;
        if (i >= stop) break;
        if (byte(s, i) !== COLON) return false;
        i = i + 1;
        if (i < stop && byte(s, i) === COLON) {
            if (gap >= 0) return false;
            gap = n;
            i = i + 1;
        } else if (i >= stop) {
            return false; // a trailing single ":"
        }
    }
    if (gap < 0) {
        if (n !== 8) return false;
    } else if (n > 7) {
        return false;
    }
    // expand: groups before the gap, zeros, groups after it
    const after = gap < 0 ? 0 : n - gap;
    const before = n - after;
    const zeros = 8 - n;
    let k = 0;
    for (let g = 0; g < before; g++) {
        addrBytes[k] = groups[g] >>> 8;
        addrBytes[k + 1] = groups[g] & 0xff;
        k = k + 2;
    }
    for (let z = 0; z < zeros; z++) {
        addrBytes[k] = 0;
        addrBytes[k + 1] = 0;
        k = k + 2;
    }
    for (let g = before; g < n; g++) {
        addrBytes[k] = groups[g] >>> 8;
        addrBytes[k + 1] = groups[g] & 0xff;
        k = k + 2;
    }
    return true;
}

/**
 * Fill addrBytes with the bytes nginx's ip_hash hashes for the client address `text` and return how many
 * (3 or 16). Never fails: text that is not an IP address gives the pseudo address (3 zero bytes).
 */
function parseClientAddr(text: string | undefined): number {
    if (text === undefined) return pseudo();
    const len = text.length;
    let stop = len + 1;
    let colon = false;
    for (let i = 1; i <= len; i++) {
        const c = byte(text, i);
        if (c === COLON) {
            colon = true;
        } else if (c === PERCENT) {
            stop = i;
            break;
        }
    }
    if (colon) {
        if (stop > 1 && parseIPv6(text, stop)) return 16;
        return pseudo();
    }
    if (parseQuad(text, 1, len + 1, 0)) return 3;
    return pseudo();
}

/**
 * Fill addrBytes with all the bytes of the IP address `text` (no brackets, no port, no zone) and return
 * 4 (IPv4) or 16 (IPv6), or 0 when it is not an address. Not a hot path (allowed targets, client keys).
 */
function parseIp(text: string): number {
    const len = text.length;
    if (len === 0) return 0;
    if (string.find(text, ":", 1, true)[0] !== undefined) return parseIPv6(text, len + 1) ? 16 : 0;
    return parseQuad(text, 1, len + 1, 0) ? 4 : 0;
}

export { addrBytes, parseClientAddr, parseIp };
