/** @noSelfInFile */
// Persistence across restarts: the state file (option state_file) holds every upstream's body, written
// atomically (temp file in the same folder, then rename: a reader never sees a torn file) by one worker at
// a time (sf:owner, taken with add + TTL), after the version moved past sf:saved. Loaded by init() when the
// shared dict is fresh (a start, not a reload: the dict survives reload).
// Phases: save from timers (blocking file I/O of a few KB..MB, off the request path); load from init.
import * as cjson from "cjson.safe";
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { currentVersion, namesInOrder, readRecord } from "./command_log";
import { CONF_SEEN, STATE_NEXT, STATE_OWNER, STATE_SAVED } from "./keys";
import { shm } from "./shm";

export const FORMAT = "dyups-state/1";

export interface SavedUpstream {
    name: string;
    body: string;
    source: string;
    /** last resolved endpoints, per server (kept for names so a restart starts with the last good answers) */
    endpoints: UpstreamRecord["endpoints"];
    /** cluster mode: the etcd revision of this state */
    etcd?: number;
}

export interface StateFile {
    format: string;
    version: number;
    saved_at: number;
    upstreams: SavedUpstream[];
    /** name -> md5 of the upstream_conf body last applied for it (see init's precedence rule) */
    conf_seen: LuaTable<string, string>;
}

/** Writes the state file if the log moved since the last save. Returns true when it wrote. Timer phase. */
let lastError: string | undefined;
let retryAt = 0;

/** Logs a save failure once per distinct error, and backs off 1 s before the next try. */
function failed(path: string, err: string): LuaMultiReturn<[boolean, string | undefined]> {
    if (err !== lastError) ngx.log(ngx.ERR, "dyups: cannot save state to ", path, ": ", err);
    lastError = err;
    retryAt = ngx.now() + 1;
    return $multi(false, err);
}

export function saveIfChanged(force?: boolean): LuaMultiReturn<[boolean, string | undefined]> {
    const path = getOptions().state_file;
    if (path === undefined) return $multi(false, undefined);
    if (!force && ngx.now() < retryAt) return $multi(false, lastError);
    const dict = shm();
    const v = currentVersion();
    const [saved] = dict.get(STATE_SAVED);
    if (!force && saved !== undefined && (saved as number) >= v) return $multi(false, undefined);
    if (!force && ngx.now() < ((dict.get(STATE_NEXT)[0] as number | undefined) ?? 0)) return $multi(false, undefined);
    const [mine] = dict.add(STATE_OWNER, ngx.worker.pid(), 10);
    if (!mine) return $multi(false, undefined);
    ngx.update_time();
    const started = ngx.now();
    const [ok, err] = pcall(write, path, v);
    ngx.update_time();
    dict.safe_set(STATE_NEXT, ngx.now() + 4 * (ngx.now() - started), 60);
    dict.delete(STATE_OWNER);
    if (!ok || err !== undefined) return failed(path, tostring(err));
    if (lastError !== undefined) ngx.log(ngx.NOTICE, "dyups: state saved to ", path, " again");
    lastError = undefined;
    dict.set(STATE_SAVED, v);
    return $multi(true, undefined);
}

function write(path: string, v: number): string | undefined {
    const ups: SavedUpstream[] = [];
    for (const [, name] of ipairs(namesInOrder())) {
        const rec = readRecord(name);
        if (rec !== undefined) {
            (ups as unknown as LuaTable<number, SavedUpstream>).set(ups.length + 1,
                { name, body: rec.body, source: rec.source, endpoints: rec.endpoints, etcd: rec.etcd });
        }
    }
    const [seenRaw] = shm().get(CONF_SEEN);
    let seen: unknown = {};
    if (seenRaw !== undefined) {
        const [s] = cjson.decode(seenRaw as string);
        if (s !== undefined) seen = s;
    }
    const state = { format: FORMAT, version: v, saved_at: ngx.now(), upstreams: ups, conf_seen: seen };
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
    const d = shm();
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
