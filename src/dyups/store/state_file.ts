/** @noSelfInFile */
// Persistence across restarts: the state file (option state_file) holds every upstream's body, written
// atomically (temp file in the same folder, then rename: a reader never sees a torn file) by one worker at
// a time (the state_file lease), after the version moved past sf:saved. Loaded by init() when the
// shared dict is fresh (a start, not a reload: the dict survives reload).
// Phases: save from timers (blocking file I/O of a few KB..MB, off the request path); load from init.
import * as cjson from "cjson.safe";
import type { Result } from "../errors";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { currentVersion, namesInOrder, readRecord } from "./command_log";
import { confSeen } from "./boot";
import { dict } from "./dict";
import { STATE_FILE_LEASE, STATE_NEXT, STATE_SAVED } from "./keys";
import { acquire, release } from "./lease";

export const FORMAT = "dyups-state/1";

export interface SavedUpstream {
    name: string;
    body: string;
    source: string;
    /** last resolved endpoints, per server (kept for names so a restart starts with the last good answers) */
    endpoints: UpstreamRecord["endpoints"];
    /** the spelling it is listed by, when not `name` */
    display?: string;
    /** cluster mode: the etcd revision of this state */
    etcd?: number;
}

export interface StateFile {
    format: string;
    version: number;
    saved_at: number;
    upstreams: SavedUpstream[];
    /** name -> md5 of the upstream_conf body last applied for it (the start-up precedence rule of startup.ts) */
    conf_seen: LuaTable<string, string>;
}

let lastError: string | undefined;
let retryAt = 0;

/** Logs a save failure once per distinct error, and backs off 1 s before the next try. */
function failed(path: string, err: string): Result<boolean> {
    if (err !== lastError) ngx.log(ngx.ERR, "dyups: cannot save state to ", path, ": ", err);
    lastError = err;
    retryAt = ngx.now() + 1;
    return $multi(undefined, err);
}

/**
 * Writes the state file if the log moved since the last save. Returns true when it wrote, false when there
 * was nothing to write (or another worker is writing), or [undefined, reason] when the save failed (logged
 * once per distinct error; retried after 1 s). Timer phase (blocking file I/O, off the request path).
 */
export function saveIfChanged(force?: boolean): Result<boolean> {
    const path = getOptions().state_file;
    if (path === undefined) return $multi(false, undefined);
    if (force !== true && ngx.now() < retryAt && lastError !== undefined) return $multi(undefined, lastError);
    const d = dict();
    const v = currentVersion();
    const [saved] = d.get(STATE_SAVED);
    if (force !== true && saved !== undefined && (saved as number) >= v) return $multi(false, undefined);
    // paced: the next save comes at least 4 times the last one's duration later (a big state takes long)
    if (force !== true && ngx.now() < ((d.get(STATE_NEXT)[0] as number | undefined) ?? 0)) return $multi(false, undefined);
    if (!acquire(STATE_FILE_LEASE, 10)) return $multi(false, undefined);
    ngx.update_time();
    const started = ngx.now();
    const [ok, err] = pcall(write, path, v);
    ngx.update_time();
    d.safe_set(STATE_NEXT, ngx.now() + 4 * (ngx.now() - started), 60);
    release(STATE_FILE_LEASE);
    if (!ok || err !== undefined) return failed(path, tostring(err));
    if (lastError !== undefined) ngx.log(ngx.NOTICE, "dyups: state saved to ", path, " again");
    lastError = undefined;
    d.set(STATE_SAVED, v);
    return $multi(true, undefined);
}

function write(path: string, v: number): string | undefined {
    const ups: SavedUpstream[] = [];
    for (const [, name] of ipairs(namesInOrder())) {
        const rec = readRecord(name);
        if (rec !== undefined) {
            ups[ups.length] = { name, body: rec.body, source: rec.source, endpoints: rec.endpoints, display: rec.display, etcd: rec.etcd };
        }
    }
    const state = { format: FORMAT, version: v, saved_at: ngx.now(), upstreams: ups, conf_seen: confSeen() };
    const [text, eerr] = cjson.encode(state);
    if (text === undefined) return `cannot encode state: ${eerr}`;
    const tmp = `${path}.tmp.${ngx.worker.pid()}`;
    const [f, oerr] = io.open(tmp, "wb");
    if (f === undefined) return `cannot open ${tmp}: ${oerr}`;
    const [wok, werr] = f.write(text, "\n");
    const flushed = f.flush();
    f.close();
    if (wok === undefined || flushed === false) {
        os.remove(tmp);
        return `cannot write ${tmp}: ${werr}`;
    }
    const [rok, rerr] = os.rename(tmp, path);
    if (rok === undefined) {
        os.remove(tmp);
        return `cannot rename ${tmp} to ${path}: ${rerr}`;
    }
    return undefined;
}

/**
 * Puts the next save off by `seconds` (never sooner than already planned): a bulk load in progress (the
 * cluster watcher's full read) whose intermediate states are not worth an O(upstreams) save each.
 */
export function deferSave(seconds: number): void {
    const d = dict();
    const until = ngx.now() + seconds;
    if (((d.get(STATE_NEXT)[0] as number | undefined) ?? 0) < until) d.safe_set(STATE_NEXT, until, 60);
}

/**
 * Reads the state file. Returns the state, or undefined when there is none; a file that is not a valid
 * state is moved aside (PATH.corrupt-TIME) and reported, so the start goes on from upstream_conf.
 */
export function loadStateFile(path: string): StateFile | undefined {
    const [f] = io.open(path, "rb");
    if (f === undefined) return undefined;
    const text = f.read("*a") as string | undefined;
    f.close();
    const [state, err] = cjson.decode(text ?? "");
    const st = state as StateFile | undefined;
    if (st === undefined || type(st) !== "table" || st.format !== FORMAT || type(st.upstreams) !== "table") {
        const aside = `${path}.corrupt-${os.time()}`;
        os.rename(path, aside);
        ngx.log(ngx.ALERT, "dyups: state file ", path, " is not a valid state (", err ?? "wrong format", "); moved to ", aside,
            ", starting from upstream_conf");
        return undefined;
    }
    return st;
}
