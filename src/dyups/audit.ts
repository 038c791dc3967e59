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
// Not audited: loading the state file at start (a restore, not a change; one summary line is logged).
// Phases: any that may log (content, timer, init).

export type SourceKind = "http" | "lua" | "dns" | "upstream_conf";

export interface WriteSource {
    kind: SourceKind;
    /** http: the client address as nginx sees it ($remote_addr, after realip) */
    client?: string;
    /** http with tokens: the token's name (never the token) */
    token?: string;
    /** http: the role the request was admitted with */
    role?: "read" | "write";
}

export const LUA_SOURCE: WriteSource = { kind: "lua" };
export const DNS_SOURCE: WriteSource = { kind: "dns" };
export const CONF_SOURCE: WriteSource = { kind: "upstream_conf" };

/** The audit line's source part: "source=http client=... token=...". */
export function describeSource(s: WriteSource): string {
    let out = `source=${s.kind}`;
    if (s.client !== undefined) out = `${out} client=${s.client}`;
    if (s.token !== undefined) out = `${out} token=${s.token}`;
    return out;
}

/** Logs one accepted write at notice. `op` is "update" or "delete". */
export function auditWrite(op: string, name: string, before: number, after: number, source: WriteSource): void {
    ngx.log(ngx.NOTICE, "dyups audit: op=", op, " upstream=", name, " rev_before=", before, " rev_after=", after,
        " ", describeSource(source));
}
