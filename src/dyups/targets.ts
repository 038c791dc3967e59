/** @noSelfInFile */
// Where an upstream may send traffic: the `allowed_targets` option. Pure (no ngx.*, no shm): the rule is
// set once by init() in the master (configureTargets) and inherited by the workers.
//
//   no option (default)  every target is allowed, as in ngx_http_dyups_module, except link-local and cloud
//                        metadata addresses (DEFAULT_DENY below), which are refused;
//   allowed_targets      a list of CIDRs ("10.0.0.0/8", "2001:db8::/32", "127.0.0.1") and unix-socket
//                        folders ("unix:/run/app/"): a target must be in one of them, nothing else is allowed
//                        (the list replaces the default rule entirely; list 169.254.0.0/16 to allow it).
//
// The rule is checked on resolved addresses, before anything is written, by the one write pipeline
// (dyups.api prepare): it holds for the HTTP interface, the Lua API (update()), upstream_conf at start and
// the state file. A refused target refuses the whole body (400 "add server failed: ..."). DNS re-resolution
// (dyups.dns.refresh) has no client to answer: it drops refused addresses from an answer (allowedOnly) and
// logs them. IPv4-mapped (::ffff:a.b.c.d) and NAT64 (64:ff9b::a.b.c.d) IPv6 addresses are judged as the
// IPv4 address they carry. Cost: O(targets x rules), rules are a handful.
import { Problem, Result } from "./errors";
import { Endpoint, UpstreamSpec } from "./model";
import { addrBytes, parseIp } from "./balance/ip_addr";

interface Cidr {
    /** 4 or 16 */
    size: number;
    bytes: number[];
    bits: number;
    text: string;
}

/** Refused by default: link-local (169.254.169.254 is the metadata address of AWS, GCP, Azure, OpenStack,
 *  DigitalOcean, Oracle), AWS's IPv6 metadata address, Alibaba Cloud's metadata address. */
export const DEFAULT_DENY = ["169.254.0.0/16", "fe80::/10", "fd00:ec2::254/128", "100.100.100.200/32"];

const find = string.find;
const sub = string.sub;

/** Parses "ADDR" or "ADDR/BITS" (host bits are masked off, as nginx's allow does). */
export function parseCidr(text: string): Result<Cidr> {
    const [slash] = find(text, "/", 1, true);
    const addr = slash === undefined ? text : sub(text, 1, slash - 1);
    const size = parseIp(addr);
    if (size === 0) return $multi(undefined, "not an IP address");
    let bits = size * 8;
    if (slash !== undefined) {
        const b = tonumber(sub(text, slash + 1));
        if (b === undefined || string.match(sub(text, slash + 1), "^%d+$")[0] === undefined || b > size * 8) {
            return $multi(undefined, `bad prefix length (0..${size * 8})`);
        }
        bits = b;
    }
    const bytes: number[] = [];
    for (let i = 0; i < size; i++) {
        const keep = bits - i * 8;
        let v = addrBytes[i];
        if (keep <= 0) v = 0;
        else if (keep < 8) v = v & (0xff - (2 ** (8 - keep) - 1));
        bytes[i] = v;
    }
    return $multi({ size, bytes, bits, text }, undefined);
}

/** addrBytes (as parseIp left them) inside `c`? An IPv6 address that carries an IPv4 one is that IPv4. */
function inCidr(c: Cidr, size: number): boolean {
    let off = 0;
    if (size === 16 && c.size === 4) {
        if (!carriesIPv4()) return false;
        off = 12;
    } else if (size !== c.size) {
        return false;
    }
    let bits = c.bits;
    for (let i = 0; bits > 0; i++) {
        const b = addrBytes[off + i];
        if (bits >= 8) {
            if (b !== c.bytes[i]) return false;
        } else {
            const mask = 0xff - (2 ** (8 - bits) - 1);
            if ((b & mask) !== c.bytes[i]) return false;
        }
        bits = bits - 8;
    }
    return true;
}

/** ::ffff:a.b.c.d or 64:ff9b::a.b.c.d (addrBytes holds an IPv6 address) */
function carriesIPv4(): boolean {
    for (let i = 4; i < 10; i++) if (addrBytes[i] !== 0) return false;
    if (addrBytes[0] === 0 && addrBytes[1] === 0 && addrBytes[2] === 0 && addrBytes[3] === 0) {
        return addrBytes[10] === 0xff && addrBytes[11] === 0xff;
    }
    return addrBytes[0] === 0 && addrBytes[1] === 0x64 && addrBytes[2] === 0xff && addrBytes[3] === 0x9b &&
        addrBytes[10] === 0 && addrBytes[11] === 0;
}

function parseAll(list: string[]): Cidr[] {
    const out: Cidr[] = [];
    for (const [, t] of ipairs(list)) {
        const [c] = parseCidr(t);
        if (c !== undefined) out[out.length] = c;
    }
    return out;
}

const defaultDeny = parseAll(DEFAULT_DENY);
/** allowed_targets: undefined = the default rule */
let allowCidrs: Cidr[] | undefined;
/** allowed unix-socket folders, each ending in "/" */
let allowFolders: string[] = [];

/** A unix path with no "." or ".." component and no empty one (so a prefix test means "inside"). */
function cleanPath(path: string): boolean {
    if (sub(path, 1, 1) !== "/") return false;
    for (const [part] of string.gmatch(sub(path, 2), "([^/]*)/?")) {
        if (part === "." || part === "..") return false;
    }
    return find(path, "//", 1, true)[0] === undefined;
}

/**
 * Sets the rule from the allowed_targets option (undefined: the default rule). Returns the number of
 * entries, or the first bad entry. Called by init() (master); also by specs.
 */
export function configureTargets(list: string[] | undefined): Result<number> {
    if (list === undefined) {
        allowCidrs = undefined;
        allowFolders = [];
        return $multi(0, undefined);
    }
    const cidrs: Cidr[] = [];
    const folders: string[] = [];
    for (const [i, t] of ipairs(list)) {
        if (sub(t, 1, 5) === "unix:") {
            let folder = sub(t, 6);
            if (sub(folder, -1) !== "/") folder = folder + "/";
            if (!cleanPath(folder)) {
                return $multi(undefined, `option "allowed_targets" entry ${i} ("${t}"): a unix-socket folder must be an absolute path without "." or ".."`);
            }
            folders[folders.length] = folder;
        } else {
            const [c, err] = parseCidr(t);
            if (c === undefined) {
                return $multi(undefined, `option "allowed_targets" entry ${i} ("${t}"): ${err}; expected a CIDR ("10.0.0.0/8"), an address, or "unix:/folder/"`);
            }
            cidrs[cidrs.length] = c;
        }
    }
    allowCidrs = cidrs;
    allowFolders = folders;
    return $multi(list.length, undefined);
}

/** Why endpoint `e` may not be a target, or undefined when it may. */
export function targetProblem(e: Endpoint): Problem {
    const host = e.host;
    if (sub(host, 1, 5) === "unix:") {
        if (allowCidrs === undefined) return undefined;
        const path = sub(host, 6);
        if (cleanPath(path)) {
            for (const [, f] of ipairs(allowFolders)) {
                if (sub(path, 1, f.length) === f) return undefined;
            }
        }
        return `${host} is not in a unix-socket folder of allowed_targets`;
    }
    const size = parseIp(host);
    if (allowCidrs === undefined) {
        if (size === 0) return undefined;
        for (const [, c] of ipairs(defaultDeny)) {
            if (inCidr(c, size)) {
                return `${host} is a link-local or cloud metadata address (${c.text}), refused unless allowed_targets lists it`;
            }
        }
        return undefined;
    }
    if (size !== 0) {
        for (const [, c] of ipairs(allowCidrs)) {
            if (inCidr(c, size)) return undefined;
        }
    }
    return `${host} is not in allowed_targets`;
}

/** The first refused target of a resolved body: "server N (ADDR): reason", or undefined. */
export function checkTargets(spec: UpstreamSpec, endpoints: Endpoint[][]): Problem {
    for (const [i, eps] of ipairs(endpoints)) {
        for (const [, e] of ipairs(eps)) {
            const p = targetProblem(e);
            if (p !== undefined) {
                const s = spec.servers[i - 1] as { addr: string } | undefined;
                return `server ${i} (${s !== undefined ? s.addr : e.host}): target ${p}`;
            }
        }
    }
    return undefined;
}

/** The allowed endpoints of `eps` (the same table when all are), and the first refusal's reason. */
export function allowedOnly(eps: Endpoint[]): LuaMultiReturn<[Endpoint[], string | undefined]> {
    let out: Endpoint[] | undefined;
    let first: string | undefined;
    for (const [i, e] of ipairs(eps)) {
        const p = targetProblem(e);
        if (p !== undefined) {
            if (out === undefined) {
                out = [];
                for (let k = 1; k < i; k++) out[out.length] = eps[k - 1];
            }
            if (first === undefined) first = p;
        } else if (out !== undefined) {
            out[out.length] = e;
        }
    }
    return $multi(out ?? eps, first);
}
