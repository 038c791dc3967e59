/** @noSelfInFile */
// Who changed routing: the source of a write, and the audit line of every accepted write.
//
// A WriteSource is a value the write pipeline receives from its caller (it never re-derives it): the HTTP
// interface passes the principal its access gate admitted (client address, token name, role), the Lua API,
// the DNS refresher and the start-up pass their own constants. After each accepted write the pipeline calls
// auditWrite, which logs one line at `notice` in the error log (nginx prefixes it with the time):
//
//   dyups audit: op=update upstream=NAME rev_before=12 rev_after=15 source=http client=203.0.113.5 token=ci
//   dyups audit: op=delete upstream=NAME rev_before=15 rev_after=16 source=lua
//
// rev_before is the revision the upstream had (0: it did not exist); rev_after the version of this write
// (for a delete: the version that deleted it). The token's name is logged, never the token. Names, client
// addresses and token names contain no spaces (validated), so the line splits on spaces.
// Not audited: loading the state file at start (a restore, not a change; one summary line is logged), and
// a cluster node's first read of etcd into an empty store (a load; one summary line); both are in the history.
// Every audited write is also recorded in the write history (history.ts), with the record it wrote.
// Phases: any that may log (content, timer, init).
import type { UpstreamRecord } from "./model";
import { recordWrite } from "./history";

export type SourceKind = "http" | "lua" | "dns" | "upstream_conf" | "cluster" | "state_file";

/** What a JSON API call or a rollback did (the history shows it; the audit line does not). */
export interface WriteAction {
    /** "rollback", "put", "delete", "add_server", "update_server", "remove_server" */
    name: string;
    /** the server it is about (its address as written) */
    server?: string;
    /** a rollback: the revision it restored */
    revision?: number;
}

export interface WriteSource {
    kind: SourceKind;
    /** http: the client address as nginx sees it ($remote_addr, after realip) */
    client?: string;
    /** http with tokens: the token's name (never the token) */
    token?: string;
    /** http: the role the request was admitted with */
    role?: "read" | "write";
    /** set by the JSON API and rollbacks for the history */
    action?: WriteAction;
}

export const LUA_SOURCE: WriteSource = { kind: "lua" };
export const DNS_SOURCE: WriteSource = { kind: "dns" };
export const CONF_SOURCE: WriteSource = { kind: "upstream_conf" };
export const STATE_SOURCE: WriteSource = { kind: "state_file" };
/** another node's write, applied here by the cluster watcher (cluster/apply.ts) */
export const CLUSTER_SOURCE: WriteSource = { kind: "cluster" };

/** The audit line's source part: "source=http client=... token=...". */
export function describeSource(s: WriteSource): string {
    let out = `source=${s.kind}`;
    if (s.client !== undefined) out = `${out} client=${s.client}`;
    if (s.token !== undefined) out = `${out} token=${s.token}`;
    return out;
}

/**
 * Logs one accepted write at notice and records it in the history. `op` is "update" or "delete"; `rec` the
 * record an update wrote (its body goes into the history). Never fails the write.
 */
export function auditWrite(op: "update" | "delete", name: string, before: number, after: number, source: WriteSource, rec?: UpstreamRecord): void {
    ngx.log(ngx.NOTICE, "dyups audit: op=", op, " upstream=", name, " rev_before=", before, " rev_after=", after,
        " ", describeSource(source));
    const [ok, err] = pcall(recordWrite, op, name, before, after, source, rec);
    if (!ok) ngx.log(ngx.ERR, "dyups: cannot record the write in the history (the write succeeded): ", err);
}
