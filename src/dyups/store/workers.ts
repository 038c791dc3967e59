/** @noSelfInFile */
// Worker heartbeats (w:<id>): what each worker reports about itself for GET /status, encoded and decoded
// here only. Written by the registry after each catch-up and on every sync tick; read by /status.
// Phases: any (one shm set / get per worker).
import { dict } from "./dict";
import { WORKER_PREFIX } from "./keys";

export interface Heartbeat {
    pid: number;
    /** the log version this worker routes by */
    applied: number;
    /** ngx.now() of the report */
    at: number;
    /** XOR digest of the revisions this worker routes by (equal digests: identical routing state) */
    digest: number;
    /** retired versions still held by requests */
    retired: number;
    /** Lua heap in KB */
    luaKb: number;
    /** requests in flight through the dyups balancer (phases/request_slot.ts): 0 when idle */
    inflight: number;
}

/** The heartbeat's fixed length: each report overwrites it in place (no allocation, even in a full dict). */
const HEARTBEAT_LEN = 96;

/** Publishes this worker's heartbeat (dropped when it cannot be written: the dict is full and it is new). */
export function publishHeartbeat(id: number, hb: Heartbeat): void {
    const text = `${hb.pid} ${hb.applied} ${hb.at} ${hb.digest} ${hb.retired} ${hb.luaKb} ${hb.inflight}`;
    dict().safe_set(WORKER_PREFIX + id, text + string.rep(" ", HEARTBEAT_LEN - text.length));
}

/** Worker id's last heartbeat, or undefined when it never reported (or the value is not one of ours). */
export function readHeartbeat(id: number): Heartbeat | undefined {
    const [raw] = dict().get(WORKER_PREFIX + id);
    if (raw === undefined || type(raw) !== "string") return undefined;
    // (a heartbeat of a release before `inflight` has 6 fields: it reads as 0)
    const [pid, applied, at, dg, ret, mem, inflight] = string.match(raw as string, "^(%d+) (%d+) ([%d%.]+) (%-?%d+) (%d+) (%d+) ?(%d*) *$");
    if (pid === undefined) return undefined;
    return {
        pid: tonumber(pid) as number,
        applied: tonumber(applied) as number,
        at: tonumber(at) as number,
        digest: tonumber(dg) as number,
        retired: tonumber(ret) as number,
        luaKb: tonumber(mem) as number,
        inflight: tonumber(inflight) ?? 0,
    };
}
