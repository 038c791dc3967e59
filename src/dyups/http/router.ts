/** @noSelfInFile */
// Which resource a request URI names, exactly as ngx_http_dyups_module reads it (reference §3.1): the
// whole URI (decoded, query string excluded, slashes merged by nginx) split on "/", empty segments
// dropped, so that at `location /` `GET /api/list` is the resource ["api", "list"] (404) and
// `POST /api/upstream/x` is 3 segments (404 "not support this interface"): nothing is guessed.
//
// A location mounted under a prefix says so: `require("dyups").interface({ prefix = "/dyups/" })`. The
// prefix is cut off and the rest is the resource; a URI outside the prefix is OUTSIDE (-1 segments), which
// the interface answers as the original answers an unknown path (GET 404 empty, POST 404 and DELETE 405
// "not support this interface"). The prefix is compared case-sensitively, as nginx compares locations;
// the URI equal to the prefix without its trailing slash ("/dyups") is the empty resource, like "/".
// Pure: no ngx.*. Cost: O(URI length) per request.

/** the resource count of a URI outside the location's prefix */
export const OUTSIDE = -1;

const sub = string.sub;

/** Valid prefixes seen so far, normalized ("/dyups" -> "/dyups/"): one table per distinct option value. */
const normalized: LuaTable<string, string> = new LuaTable();

/**
 * The normalized prefix of interface()'s options (undefined, {} or { prefix = "/" }: "/"). A bad option
 * is the caller's configuration bug: it raises, so the request fails with 500 and the reason in the log.
 */
export function interfacePrefix(opts: unknown): string {
    if (opts === undefined) return "/";
    if (type(opts) !== "table") error(`bad argument #1 to 'interface' (table expected, got ${type(opts)})`, 3);
    let prefix: unknown = undefined;
    for (const [k, v] of pairs(opts as LuaTable<AnyNotNil, unknown>)) {
        if (k !== ("prefix" as AnyNotNil)) error(`interface(): unknown option "${tostring(k)}" (only "prefix")`, 3);
        prefix = v;
    }
    if (prefix === undefined) return "/";
    if (type(prefix) !== "string") error(`interface(): option "prefix" must be a string, got ${type(prefix)}`, 3);
    const p = prefix as string;
    const known = normalized.get(p);
    if (known !== undefined) return known;
    if (sub(p, 1, 1) !== "/" || string.find(p, "[%s%c?#]")[0] !== undefined) {
        error(`interface(): option "prefix" must be a path starting with "/" ("/dyups/"), got "${p}"`, 3);
    }
    const n = sub(p, -1) === "/" ? p : p + "/";
    normalized.set(p, n);
    return n;
}

/**
 * The resource's segments and their count for URI under PREFIX ("/" or "/path/"): [segments, n], n = 0 for
 * the empty resource, OUTSIDE when the URI is not under the prefix.
 */
export function resource(uri: string, prefix: string): LuaMultiReturn<[string[], number]> {
    let rest = uri;
    if (prefix !== "/") {
        const plen = prefix.length;
        if (sub(uri, 1, plen) === prefix) {
            rest = sub(uri, plen);
        } else if (uri === sub(prefix, 1, plen - 1)) {
            rest = "/";
        } else {
            return $multi([], OUTSIDE);
        }
    }
    const segs: string[] = [];
    let n = 0;
    for (const [seg] of string.gmatch(rest, "[^/]+")) {
        n = n + 1;
        segs[n - 1] = seg;
    }
    return $multi(segs, n);
}

let hinted = false;

/**
 * For a URI at prefix "/" that is not a resource but ends like one ("/dyups/list", "/dyups/upstream/x"):
 * the prefix its location probably has but did not declare. Once per worker (a warning for operators
 * upgrading from versions that guessed the prefix), then undefined.
 */
export function undeclaredPrefix(segs: string[], n: number): string | undefined {
    if (hinted || n < 2) return undefined;
    const last = string.lower(segs[n - 1]);
    let keep = 0;
    if (n >= 3 && string.lower(segs[n - 2]) === "upstream") keep = n - 2;
    else if (last === "list" || last === "detail" || last === "status" || last === "check_status" || last === "metrics" ||
        last === "stats" || last === "dashboard") keep = n - 1;
    if (keep < 1) return undefined;
    hinted = true;
    return "/" + table.concat(segs, "/", 1, keep) + "/";
}
