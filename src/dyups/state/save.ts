/** @noSelfInFile */
// Saving the state file (option state_file): run by every worker's timer; one worker at a time writes
// (the state_file lease), after the log's version moved past the version last saved. The file is written as
// a database writes (state/files.ts: temp file, fsync, rename, fsync of the folder), in chunks of about
// CHUNK bytes, yielding after every half millisecond of work (dyups.pace), so that a large state does not hold the
// worker's event loop (other requests on that worker run meanwhile; the lease is renewed at each chunk).
// The upstreams come in creation order from this worker's registry (no listing of the dict's keys), each
// read from the store when its turn comes: writes made during a save may or may not be in it, but each
// record is whole, and the version saved is the one the save started from, so a later write is saved
// again by the next round.
// Every outcome goes to the dict (store/state_file.ts): GET /status shows the last save (time, result, error,
// duration, size) and counts failures; a failure is logged once per distinct error and retried after 1 s.
// Phases: timer only (blocking file I/O between yields; never on the request path).
import * as cjson from "cjson.safe";
import type { Result } from "../errors";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import * as order from "../registry/order";
import { sync } from "../registry/sync";
import { confSeen } from "../store/boot";
import { currentVersion, decodeRecord, readRaw } from "../store/command_log";
import {
    lastSave, nextSaveAt, recordSave, releaseSaveLease, renewSaveLease, savedVersion, setNextSave, setSavedVersion, takeSaveLease,
} from "../store/state_file";
import { abandon, commitTemp, folderWritable, OpenFile, openTemp, writeAll } from "./files";
import { FORMAT } from "./format";
import { newPacer, pace, Pacer } from "../pace";

/** bytes written between yields */
const CHUNK = 65536;

let lastError: string | undefined;
let retryAt = 0;

/** Logs a save failure once per distinct error, and backs off 1 s before the next try. */
function failed(path: string, err: string): Result<boolean> {
    if (err !== lastError) ngx.log(ngx.ERR, "dyups: cannot save state to ", path, ": ", err);
    lastError = err;
    retryAt = ngx.now() + 1;
    return $multi(undefined, err);
}

/** Whether a save of version v is due (a few shm gets). */
function due(v: number): boolean {
    // nothing new, and the last save worked (the first round after start-up saves once: /status then shows
    // at once whether the file can be written; a failed save is retried until one works)
    const last = lastSave();
    if (savedVersion() >= v && last !== undefined && last.ok) return false;
    // paced: the next save comes at least 4 times the last one's duration later (a big state takes long; a
    // cluster node's bulk load defers it, store/state_file.ts deferSave)
    return ngx.now() >= nextSaveAt();
}

/** true while this worker's save job runs */
let saving = false;

function saveJob(premature: boolean): void {
    if (!premature) pcall(saveIfChanged);
    saving = false;
}

/**
 * The sync timer's call: when a save is due, runs it in a timer of its own, so that a long save (it yields
 * between chunks) does not hold up the rest of the tick (DNS, health checks, cluster). Cheap when not due.
 */
export function saveSoon(): void {
    if (saving || getOptions().state_file === undefined) return;
    if (ngx.now() < retryAt && lastError !== undefined) return;
    if (!due(currentVersion())) return;
    const [ok] = ngx.timer.at(0, saveJob);
    if (ok === true) saving = true;
}

/**
 * Writes the state file if the log moved since the last save. Returns true when it wrote, false when there
 * was nothing to write (or another worker is writing), or [undefined, reason] when the save failed (logged
 * once per distinct error; retried after 1 s). Timer phase.
 */
export function saveIfChanged(force?: boolean): Result<boolean> {
    const path = getOptions().state_file;
    if (path === undefined) return $multi(false, undefined);
    if (force !== true && ngx.now() < retryAt && lastError !== undefined) return $multi(undefined, lastError);
    const v = currentVersion();
    if (force !== true && !due(v)) return $multi(false, undefined);
    if (!takeSaveLease()) return $multi(false, undefined);
    ngx.update_time();
    const started = ngx.now();
    const [ok, res] = pcall(write, path, v);
    ngx.update_time();
    setNextSave(ngx.now() + 4 * (ngx.now() - started));
    releaseSaveLease();
    const ms = math.floor((ngx.now() - started) * 1000);
    const reason = ok ? (res as Written).err : tostring(res);
    const bytes = ok ? (res as Written).bytes : 0;
    recordSave({ at: ngx.now(), ok: reason === undefined, version: v, ms, bytes, error: reason });
    if (reason !== undefined) return failed(path, reason);
    if (lastError !== undefined) ngx.log(ngx.NOTICE, "dyups: state saved to ", path, " again");
    lastError = undefined;
    setSavedVersion(v);
    return $multi(true, undefined);
}

/** The file being written and what is buffered for it. */
interface Writer {
    f: OpenFile;
    buf: string[];
    n: number;
    size: number;
    err?: string;
    pacer: Pacer;
}

/** Writes what is buffered and renews the lease. */
function flushChunk(w: Writer): void {
    const [, werr] = writeAll(w.f, table.concat(w.buf, "", 1, w.n));
    w.buf = [];
    w.n = 0;
    w.size = 0;
    w.err = werr;
    renewSaveLease();
}

/** Buffers S; writes a full chunk; lets other requests of this worker run after a slice of work. */
function put(w: Writer, s: string): void {
    w.n = w.n + 1;
    w.buf[w.n - 1] = s;
    w.size = w.size + s.length;
    if (w.size >= CHUNK) flushChunk(w);
    if (!ngx.worker.exiting()) pace(w.pacer, s.length);
}

interface Written {
    err?: string;
    bytes: number;
}

/** The whole save: the error (undefined: saved) and the bytes written. */
function write(path: string, v: number): Written {
    sync();
    const [enc] = cjson.encode(confSeen());
    const [f, oerr] = openTemp(path);
    if (f === undefined) return { err: oerr, bytes: 0 };
    const w: Writer = { f, buf: [], n: 0, size: 0, pacer: newPacer() };
    put(w, `{"format":"${FORMAT}","version":${v},"saved_at":${ngx.now()},"conf_seen":${enc ?? "{}"},"upstreams":[`);
    let first = true;
    let [name, i] = order.nextAfter(0);
    while (name !== undefined && w.err === undefined) {
        const raw = readRaw(name);
        const rec: UpstreamRecord | undefined = raw !== undefined ? decodeRecord(name, raw) : undefined;
        if (rec !== undefined) {
            const [item, eerr] = cjson.encode({
                name, body: rec.body, source: rec.source, endpoints: rec.endpoints, display: rec.display, etcd: rec.etcd,
            });
            if (item === undefined) {
                w.err = `cannot encode upstream ${name}: ${eerr}`;
                break;
            }
            put(w, first ? item : "," + item);
            first = false;
        }
        // a yield may have moved names: resume after this one, where it is now
        i = order.positionAfter(name) ?? i;
        [name, i] = order.nextAfter(i);
    }
    if (w.err === undefined) {
        put(w, "]}\n");
        flushChunk(w);
    }
    if (w.err !== undefined) {
        abandon(f);
        return { err: w.err, bytes: 0 };
    }
    const [, cerr] = commitTemp(f);
    return { err: cerr, bytes: f.bytes };
}

/**
 * Whether writes may proceed under state_file_strict: [true] or [false, reason] while the state cannot be
 * saved (the last save failed, or the state file's folder is not writable now). One shm get and one access().
 */
export function stateWritable(): LuaMultiReturn<[boolean, string | undefined]> {
    const path = getOptions().state_file;
    if (path === undefined) return $multi(true, undefined);
    const last = lastSave();
    if (last !== undefined && !last.ok) return $multi(false, last.error ?? "the last save failed");
    if (!folderWritable(path)) return $multi(false, `the folder of ${path} is not writable`);
    return $multi(true, undefined);
}
