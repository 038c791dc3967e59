/** @noSelfInFile */
// The JSON API's and the rollback's writes. Every one ends as a whole body (nginx syntax) sent through the
// write pipeline exactly like a POST (pipeline.ts: parse, validate, resolve, allowed targets, sandbox build,
// commit, audit + history), so the command log keeps one full record per change:
//   writeBody    PUT / DELETE of an upstream, and a rollback: the body (or the delete) as given
//   editUpstream a change of part of an upstream (one server added, changed, drained, removed): read the
//                current record, edit a copy of its spec (ops/document.ts draftOf), render it back to a
//                body (parse/render.ts: render -> parse is the identity on specs), write it conditionally on
//                the revision it read. When the client gave no If-Match, a write that lost a race to another
//                writer (412) is redone on the new state, up to EDIT_TRIES times.
//   rollback     the body the upstream had at a revision (history.ts bodyAt), written as a new write
// A dry run (opts.dryRun) validates as the write would (parse, resolve, targets, sandbox build, check
// capacity, the expected revision) and answers the diff, changing nothing. Not checked by a dry run: the
// max_upstreams count and the dict's room for the record (the commit's own checks, 429 and 507).
// Phases: content (writes may wait for the write lock and resolve names). Outcomes are StatusResults whose
// reasons are the pipeline's, without the plain protocol's "add server failed: " prefix and the rendered
// body's line numbers (a JSON client never wrote those lines).
import type { WriteSource } from "../audit";
import type { StatusResult } from "../errors";
import type { UpstreamRecord } from "../model";
import { bodyAt } from "../history";
import { healthFits } from "../health/capacity";
import { renderBody, RenderSpec } from "../parse/render";
import { validateName } from "../parse/upstream";
import { ADD_FAILED, get, prepare, remove, update } from "../pipeline";
import { tryBuild } from "../registry/build";
import { diffSpecs } from "./diff";
import { draftOf } from "./document";

/** How many times an edit without If-Match is redone after losing a race to another writer. */
export const EDIT_TRIES = 5;

export interface WriteOptions {
    /** If-Match: the revision the upstream must be at (0: must not exist) */
    expect?: number;
    dryRun: boolean;
    source: WriteSource;
}

export interface Written {
    /** the upstream, lowercase */
    name: string;
    /** it did not exist before */
    created: boolean;
    deleted: boolean;
    /** committed: the new log version */
    version?: number;
    /** committed and not deleted: the record now stored */
    rec?: UpstreamRecord;
    /** a dry run: what the write would change */
    report?: Record<string, unknown>;
}

export type Outcome = StatusResult<Written>;

/** A pipeline reason as the JSON API shows it. */
export function jsonReason(reason: string): string {
    let r = reason;
    const prefix = `${ADD_FAILED}: `;
    if (string.sub(r, 1, prefix.length) === prefix) r = string.sub(r, prefix.length + 1);
    if (r === "wait and try again\n") return "another write holds the lock: wait and try again";
    if (r === "not found uptream") return "upstream not found";
    return string.gsub(r, " at line %d+$", "")[0];
}

function fail(reason: string, status: number): Outcome {
    return $multi(undefined, jsonReason(reason), status);
}

function mismatch(cur: UpstreamRecord | undefined, expect: number | undefined): boolean {
    return expect !== undefined && (cur !== undefined ? cur.rev : 0) !== expect;
}

function dryRun(lname: string, shown: string, cur: UpstreamRecord | undefined, body: string | undefined, expect: number | undefined): Outcome {
    if (mismatch(cur, expect)) return fail(`revision mismatch: upstream is at revision ${cur !== undefined ? cur.rev : 0}`, 412);
    const report: Record<string, unknown> = {
        dry_run: true, upstream: shown, revision: cur !== undefined ? cur.rev : 0,
    };
    if (body === undefined) {
        if (cur === undefined) return fail("not found uptream", 404);
        report.operation = "delete";
        report.diff = diffSpecs(draftOf(cur.spec), undefined);
        return $multi({ name: lname, created: false, deleted: true, report }, undefined, undefined);
    }
    const [rec, err] = prepare(lname, body, "api");
    if (rec === undefined) return fail(err, 400);
    const [ver, berr] = tryBuild(rec);
    if (ver === undefined) return fail(berr, 500);
    const [fits, ferr] = healthFits(rec);
    if (fits === undefined) return fail(ferr, 507);
    report.operation = cur === undefined ? "create" : "replace";
    report.diff = diffSpecs(cur !== undefined ? draftOf(cur.spec) : undefined, draftOf(rec.spec));
    report.body = body;
    return $multi({ name: lname, created: cur === undefined, deleted: false, report }, undefined, undefined);
}

/**
 * Writes `body` as the whole of upstream `name` (spelled as it should be listed), or deletes it (body
 * undefined). Statuses: 400 (bad name or body), 404 (delete of an unknown upstream), 409 (lock busy),
 * 412 (expect), 429, 507, 500.
 */
export function writeBody(name: string, body: string | undefined, opts: WriteOptions): Outcome {
    const [lname, nerr] = validateName(name);
    if (lname === undefined) return fail(nerr, body === undefined ? 404 : 400);
    const cur = get(lname);
    if (opts.dryRun) return dryRun(lname, name, cur, body, opts.expect);
    let v: number | undefined;
    let reason: string | undefined;
    let status: number | undefined;
    if (body === undefined) [v, reason, status] = remove(name, opts.expect, opts.source);
    else [v, reason, status] = update(name, body, opts.expect, opts.source);
    if (v === undefined) return fail(reason as string, status as number);
    return $multi({ name: lname, created: cur === undefined, deleted: body === undefined, version: v, rec: get(lname) }, undefined, undefined);
}

/** An edit of an upstream's draft: the new draft, or [undefined, reason, status]. */
export type Edit = (draft: RenderSpec) => StatusResult<RenderSpec>;

/**
 * Changes part of existing upstream `name` with `edit` (see the header). Statuses: those of writeBody,
 * 404 (unknown upstream), the edit's own, 409 when the upstream kept changing under EDIT_TRIES attempts.
 */
export function editUpstream(name: string, edit: Edit, opts: WriteOptions): Outcome {
    const [lname] = validateName(name);
    if (lname === undefined) return fail("not found uptream", 404);
    for (let attempt = 1; attempt <= EDIT_TRIES; attempt++) {
        const cur = get(lname);
        if (cur === undefined) return fail("not found uptream", 404);
        if (mismatch(cur, opts.expect)) return fail(`revision mismatch: upstream is at revision ${cur.rev}`, 412);
        const [draft, reason, status] = edit(draftOf(cur.spec));
        if (draft === undefined) return $multi(undefined, reason, status);
        const [res, r2, s2] = writeBody(cur.display ?? cur.name, renderBody(draft), { expect: cur.rev, dryRun: opts.dryRun, source: opts.source });
        if (res !== undefined) return $multi(res, undefined, undefined);
        if (s2 !== 412 || opts.expect !== undefined) return $multi(undefined, r2, s2);
    }
    return fail(`upstream "${lname}" changed during each of ${EDIT_TRIES} attempts; try again`, 409);
}

/**
 * Restores the body upstream `name` had at revision `rev` as a new write, validated like any other (a body
 * that no longer validates: 400 with the reason). Statuses: writeBody's, 404/410 from the history.
 */
export function rollback(name: string, rev: number, opts: WriteOptions): Outcome {
    const [lname, nerr] = validateName(name);
    if (lname === undefined) return fail(nerr, 404);
    const [body, reason, status] = bodyAt(lname, rev);
    if (body === undefined) return $multi(undefined, reason, status);
    const s = opts.source;
    const source: WriteSource = { kind: s.kind, client: s.client, token: s.token, role: s.role, action: { name: "rollback", revision: rev } };
    return writeBody(name, body, { expect: opts.expect, dryRun: opts.dryRun, source });
}
