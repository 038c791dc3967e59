/** @noSelfInFile */
// The `cluster` option of init() and the layout of dyups' keys in etcd. Pure: no ngx.*, no shm.
//
//   init({ cluster = { etcd = { "127.0.0.1:2379", "10.0.0.2:2379" }, prefix = "/dyups", user = "u", password = "p" } })
//
// etcd endpoints are "host:port" or "http://host:port" (the v3 JSON gateway over plain HTTP/1.1; a host name
// needs nginx's `resolver` directive, like every cosocket). prefix defaults to "/dyups"; user and password
// go together (etcd's auth: user/password -> token).
//
// Keys: one per upstream, `<prefix>/upstreams/<name>` (names are lowercase, as every name in dyups), whose
// value is the JSON `{"name":..., "body":..., "by":...}`: the body as written (every node parses it itself
// and resolves its host names itself), and the id of the write (`by`), which lets a writer recognise its own
// write after an answer that got lost (see writer.ts).
import { Result } from "../errors";

/** the lease (store/lease.ts) of the worker that follows etcd for this node */
export const LEASE = "cluster";

export interface EtcdEndpoint {
    host: string;
    port: number;
    /** "host:port", as shown in /status */
    name: string;
}

export interface ClusterConfig {
    endpoints: EtcdEndpoint[];
    prefix: string;
    user?: string;
    password?: string;
}

const KEYS: LuaTable<string, string> = new LuaTable();
KEYS.set("etcd", "list");
KEYS.set("prefix", "string");
KEYS.set("user", "string");
KEYS.set("password", "string");

/** "127.0.0.1:2379", "http://etcd1:2379", "[::1]:2379" -> endpoint, or undefined. */
export function parseEndpoint(s: string): EtcdEndpoint | undefined {
    let rest = s;
    if (string.sub(rest, 1, 7) === "http://") rest = string.sub(rest, 8);
    const [trimmed] = string.gsub(rest, "/$", "");
    rest = trimmed;
    let [host, port] = string.match(rest, "^%[([%x:%.]+)%]:(%d+)$");
    if (host === undefined) [host, port] = string.match(rest, "^([%w%.%-]+):(%d+)$");
    if (host === undefined || port === undefined) return undefined;
    const p = tonumber(port) as number;
    if (p < 1 || p > 65535) return undefined;
    const shown = string.find(host, ":", 1, true)[0] !== undefined ? `[${host}]:${p}` : `${host}:${p}`;
    return { host, port: p, name: shown };
}

/** Validates the `cluster` option. Returns the normalised config or the first problem. */
export function validateCluster(v: unknown): Result<ClusterConfig> {
    if (type(v) !== "table") return $multi(undefined, `option "cluster" must be a table, got ${type(v)}`);
    const t = v as LuaTable<string | number, unknown>;
    for (const [k, x] of pairs(t)) {
        if (type(k) !== "string") return $multi(undefined, `option "cluster": keys must be strings, got ${type(k)}`);
        const kind = KEYS.get(k as string);
        if (kind === undefined) return $multi(undefined, `option "cluster": unknown key "${k as string}" (etcd, prefix, user, password)`);
        if (kind === "list" ? type(x) !== "table" : type(x) !== kind) {
            return $multi(undefined, `option "cluster.${k as string}" must be ${kind === "list" ? "a list of \"host:port\" strings" : `a ${kind}`}, got ${type(x)}`);
        }
    }
    const list = t.get("etcd") as unknown[] | undefined;
    if (list === undefined) return $multi(undefined, `option "cluster.etcd" is required: a list of etcd endpoints, { "127.0.0.1:2379" }`);
    const endpoints: EtcdEndpoint[] = [];
    let n = 0;
    for (const [i, e] of ipairs(list)) {
        const ep = type(e) === "string" ? parseEndpoint(e as string) : undefined;
        if (ep === undefined) return $multi(undefined, `option "cluster.etcd" entry ${i} (${tostring(e)}) must be "host:port" or "http://host:port"`);
        n = n + 1;
        endpoints[n - 1] = ep;
    }
    if (n === 0) return $multi(undefined, `option "cluster.etcd" must list at least one endpoint`);
    const prefix = (t.get("prefix") as string | undefined) ?? "/dyups";
    if (string.match(prefix, "^/[%w%._%-/]*$")[0] === undefined || string.sub(prefix, -1) === "/" || prefix.length > 256
        || string.find(prefix, "//", 1, true)[0] !== undefined) {
        return $multi(undefined, `option "cluster.prefix" ("${prefix}") must look like "/dyups": a "/", then letters, digits, ".", "_", "-", "/", not ending with "/"`);
    }
    const user = t.get("user") as string | undefined;
    const password = t.get("password") as string | undefined;
    if ((user === undefined) !== (password === undefined)) return $multi(undefined, `options "cluster.user" and "cluster.password" go together`);
    if (user === "") return $multi(undefined, `option "cluster.user" must not be empty`);
    return $multi({ endpoints, prefix, user, password }, undefined);
}

/** The folder of upstream keys: "<prefix>/upstreams/". */
export function upstreamsPrefix(c: ClusterConfig): string {
    return `${c.prefix}/upstreams/`;
}

export function upstreamKey(c: ClusterConfig, name: string): string {
    return upstreamsPrefix(c) + name;
}

/** The range_end that makes [key, end) cover every key starting with `prefix` (its last byte + 1). */
export function prefixEnd(prefix: string): string {
    const last = string.byte(prefix, prefix.length);
    return string.sub(prefix, 1, prefix.length - 1) + string.char(last + 1);
}

/** The upstream name of a key under the folder, or undefined for any other key. */
export function nameOfKey(c: ClusterConfig, key: string): string | undefined {
    const folder = upstreamsPrefix(c);
    if (string.sub(key, 1, folder.length) !== folder) return undefined;
    const name = string.sub(key, folder.length + 1);
    return name === "" ? undefined : name;
}

/** What etcd stores per upstream. */
export interface StoredUpstream {
    name: string;
    body: string;
    /** the id of the write that produced it (writer.ts) */
    by?: string;
}
