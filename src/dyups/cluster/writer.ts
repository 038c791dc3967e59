/** @noSelfInFile */
// Cluster mode's write path: POST/DELETE of the interface and update()/delete() of the Lua API, after the
// body was parsed, validated, resolved and built locally (api.ts: a bad body is 400 and nothing is sent).
//
// Revisions. In cluster mode an upstream's revision, everywhere a client sees one (ETag, If-Match,
// X-Dyups-Version, `revision` in JSON and in get()), is the etcd mod_revision of its key: the same on every
// node, so a client may read on node A and write on node B. The local command log keeps its own versions
// (`rev` of a record, /status `version`), which only order this node's changes among its workers.
//
// One write = one etcd transaction on the upstream's key, guarded by its mod_revision:
//   compare MOD(key) == base   success: put (or delete)   failure: range(key) (what is there now)
// base is the client's If-Match (If-None-Match: * is 0: "must not exist"), else the revision this node
// holds for the upstream (0 when it has none). When the compare fails:
//   - with If-Match: 412, nothing changed;
//   - plain POST/DELETE: the write is based on a revision that is out of date here (another node wrote
//     since): it is retried against the revision just read, so a concurrent update from another node is
//     never overwritten unseen; every write gets its own etcd revision.
// The answer's revision R is the transaction's; the writing node applies R to its command log before it
// answers (read-your-writes: every worker of this node routes by it after the 200). The watch brings R here
// too later, and the guard of store/cluster.ts skips it.
//
// Faults. A request that could not be sent anywhere (every endpoint refuses the connection) changed
// nothing: 503 with the reasons. A request whose answer was lost, or that etcd could not decide (no leader,
// leader changed, timeout), may or may not have been applied: it is retried (another endpoint first) under
// the same guard until WRITE_DEADLINE. A retry is safe: if the lost attempt was applied, the compare fails
// and the value read back carries this write's id (`by`), so it is answered 200 with that revision; if it
// was not, the retry applies it. After WRITE_DEADLINE: 503 "not confirmed" (every node would still apply
// it from etcd if the lost attempt was applied: never only some of them).
// Phases: content and timer (cosockets). shm: only through store/ (command log, store/cluster).
import * as cjson from "cjson.safe";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { canYield } from "../phase";
import { readRaw, upstreamCount } from "../store/command_log";
import { etcdRevisionOf, noteRevision, noteWriteError } from "../store/cluster";
import { applyRevision } from "./apply";
import { ClusterConfig, StoredUpstream, upstreamKey } from "./config";
import { b64, call, EtcdResult, FailKind, headerRevision, num, unb64 } from "./etcd";

/** A write's answer: status, message, and the etcd revision on success. */
export type WriteAnswer = LuaMultiReturn<[number, string, number?]>;

/** seconds a write keeps retrying a request etcd may or may not have applied */
export const WRITE_DEADLINE = 6;
/**
 * ms one transaction may take: a proposal that the leader took with it when it died is never answered
 * (etcd's own timeout is 5 s or more), so a write moves on to another member after this.
 */
export const TXN_TIMEOUT = 2000;
/** how many times a plain write is re-based on a newer revision before it answers 409 */
const MAX_REBASE = 50;

let token: string | undefined;
let seq = 0;

/** A write id unique across nodes and workers: random per worker, pid, counter. */
function writeId(): string {
    if (token === undefined) token = string.format("%08x", math.random(0, 0x7fffffff));
    seq = seq + 1;
    return `${token}-${ngx.worker.pid()}-${seq}`;
}

function config(): ClusterConfig {
    return getOptions().cluster as ClusterConfig;
}

interface TxnAnswer {
    succeeded: boolean;
    revision: number;
    /** the failure branch's range: the key's current state (undefined: absent) */
    current?: { mod_revision: number; value?: string };
    /** the success branch's delete count */
    deleted: number;
}

function readTxn(doc: LuaTable<string, unknown>): TxnAnswer {
    const ans: TxnAnswer = { succeeded: doc.get("succeeded") === true, revision: headerRevision(doc), deleted: 0 };
    const responses = doc.get("responses") as LuaTable<number, LuaTable<string, unknown>> | undefined;
    const first = responses !== undefined ? responses.get(1) : undefined;
    if (first === undefined) return ans;
    const range = first.get("response_range") as { kvs?: LuaTable<number, { mod_revision?: string; value?: string }> } | undefined;
    if (range !== undefined && range.kvs !== undefined) {
        const kv = range.kvs.get(1);
        if (kv !== undefined) ans.current = { mod_revision: num(kv.mod_revision), value: kv.value };
    }
    const del = first.get("response_delete_range") as { deleted?: string } | undefined;
    if (del !== undefined) ans.deleted = num(del.deleted);
    return ans;
}

/** true when the stored value was written by write `id`. */
function writtenBy(value: string | undefined, id: string): boolean {
    if (value === undefined) return false;
    const [t] = cjson.decode(unb64(value));
    return t !== undefined && type(t) === "table" && (t as StoredUpstream).by === id;
}

function txn(key: string, base: number, op: unknown): EtcdResult<TxnAnswer> {
    const k = b64(key);
    const [doc, err, kind] = call("/v3/kv/txn", {
        compare: [{ key: k, target: "MOD", mod_revision: `${base}`, result: "EQUAL" }],
        success: [op],
        failure: [{ request_range: { key: k } }],
    }, TXN_TIMEOUT);
    if (doc === undefined) return $multi(undefined, err as string, kind as FailKind);
    const ans = readTxn(doc);
    noteRevision(ans.revision);
    return $multi(ans, undefined, undefined);
}

/** Applies the write to this node after etcd took it (read-your-writes). */
function applyOwn(name: string, rec: UpstreamRecord | undefined, rev: number): WriteAnswer {
    const [, reason, status] = applyRevision(name, rec, rev);
    if (reason !== undefined) {
        const msg = `committed to etcd at revision ${rev}, but this node cannot apply it: ${reason}`;
        noteWriteError(msg);
        ngx.log(ngx.ERR, "dyups: cluster: upstream ", name, ": ", msg);
        return $multi(status as number, msg);
    }
    return $multi(200, "success", rev);
}

/** A failure after which nothing was changed anywhere: 503, or 413 for a body etcd will never take. */
function refused(err: string, kind: FailKind): WriteAnswer {
    const msg = kind === "unreachable" ? `${err}; nothing was changed` : `etcd refused the write: ${err}; nothing was changed`;
    noteWriteError(msg);
    return $multi(kind === "too large" ? 413 : 503, msg);
}

function unconfirmed(err: string): WriteAnswer {
    const msg = `etcd did not confirm the write within ${WRITE_DEADLINE} s (${err}); if etcd applied it, every node applies it`;
    noteWriteError(msg);
    return $multi(503, msg);
}

/** Sleeps before a retry: 50 ms, 100 ms, ... up to 500 ms. */
function pause(attempt: number): void {
    ngx.sleep(math.min(0.05 * attempt, 0.5));
    ngx.update_time();
}

/** What `settle` answers when an answered transaction does not end the write: re-base (or 412) and retry. */
const UNSETTLED = 0;

/**
 * The retry loop of a write (see the header): transaction `op` on `key` guarded by `base`. `settle` says what an
 * answered transaction means for this kind of write (`uncertain`: an earlier attempt's fate is unknown), or
 * UNSETTLED; then the write is 412 with If-Match (503 "not confirmed" when uncertain), else re-based on the
 * revision etcd holds now (409 after MAX_REBASE). Failures: refused (503/413), or retried under the same guard
 * until WRITE_DEADLINE when etcd may have applied them.
 */
function guardedWrite(key: string, base: number, op: unknown, expectRev: number | undefined,
    settle: (ans: TxnAnswer, uncertain: boolean) => WriteAnswer): WriteAnswer {
    let uncertain = false;
    let lastErr = "";
    const deadline = ngx.now() + WRITE_DEADLINE;
    let rebases = 0;
    for (let attempt = 1; ; attempt++) {
        const [ans, err, kind] = txn(key, base, op);
        if (ans !== undefined) {
            const [status, msg, rev] = settle(ans, uncertain);
            if (status !== UNSETTLED) return $multi(status, msg, rev);
            const curRev = ans.current !== undefined ? ans.current.mod_revision : 0;
            if (expectRev !== undefined) {
                if (uncertain) return unconfirmed(`${lastErr}; the upstream changed since, to revision ${curRev}`);
                return $multi(412, `revision mismatch: upstream is at revision ${curRev}`);
            }
            rebases = rebases + 1;
            if (rebases > MAX_REBASE) return $multi(409, "wait and try again\n");
            base = curRev;
        } else {
            lastErr = err as string;
            if (!uncertain && kind !== "unknown") return refused(lastErr, kind as FailKind);
            if (kind !== "unknown" && kind !== "unreachable") return unconfirmed(lastErr);
            uncertain = true;
            if (ngx.now() >= deadline) return unconfirmed(lastErr);
            pause(attempt);
        }
    }
}

/**
 * Writes upstream NAME (lowercase) with the prepared record. expectRev: If-Match (etcd revision; 0 = must
 * not exist). Returns 200 "success" + revision, 412, 409, 429, 503 with the reason (see the header).
 */
export function clusterUpdate(name: string, rec: UpstreamRecord, expectRev?: number): WriteAnswer {
    if (!canYield()) return $multi(503, "cluster mode: writes go to etcd and need a phase that can use sockets (content, timer)");
    const raw = readRaw(name);
    if (expectRev === undefined && raw === undefined) {
        const max = getOptions().max_upstreams ?? 0;
        if (max > 0 && upstreamCount() >= max) return $multi(429, `too many upstreams (max_upstreams is ${max})`);
    }
    const key = upstreamKey(config(), name);
    const id = writeId();
    const [value] = cjson.encode({ name, body: rec.body, by: id });
    const put = { request_put: { key: b64(key), value: b64(value as string) } };
    return guardedWrite(key, expectRev ?? etcdRevisionOf(raw), put, expectRev, (ans: TxnAnswer, uncertain: boolean) => {
        if (ans.succeeded) return applyOwn(name, rec, ans.revision);
        const cur = ans.current;
        if (cur !== undefined && uncertain && writtenBy(cur.value, id)) return applyOwn(name, rec, cur.mod_revision);
        return $multi(UNSETTLED, "");
    });
}

/** Deletes upstream NAME (lowercase): 200 "success" + revision, 404 "not found uptream", 412, 503. */
export function clusterRemove(name: string, expectRev?: number): WriteAnswer {
    if (!canYield()) return $multi(503, "cluster mode: writes go to etcd and need a phase that can use sockets (content, timer)");
    const key = upstreamKey(config(), name);
    const del = { request_delete_range: { key: b64(key) } };
    return guardedWrite(key, expectRev ?? etcdRevisionOf(readRaw(name)), del, expectRev, (ans: TxnAnswer, uncertain: boolean) => {
        if (ans.succeeded) {
            if (ans.deleted > 0) return applyOwn(name, undefined, ans.revision);
            // nothing there at that revision (base 0): not found; this node may still hold it from before
            applyRevision(name, undefined, ans.revision);
            return $multi(404, "not found uptream");
        }
        if (ans.current === undefined) {
            // absent now: deleted, by this write's lost attempt or by another write; nothing newer exists
            if (uncertain) return applyOwn(name, undefined, ans.revision);
            applyRevision(name, undefined, ans.revision);
            if (expectRev !== undefined) return $multi(412, "revision mismatch: upstream is at revision 0");
            return $multi(404, "not found uptream");
        }
        return $multi(UNSETTLED, "");
    });
}
