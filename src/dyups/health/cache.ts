/** @noSelfInFile */
// The balancer's view of active health: per worker, the down flag of each checked peer (hc:d:<id>) as last
// read, dropped together with the passive-health cache whenever the shared health generation moves (the
// prober moves it at every up/down change). In the steady state a request reads nothing here from shm: the
// generation check the timer does (store/peer_health.healthSync) is the only read. HOT PATH: balancer phase;
// allocates nothing, builds no strings (keys are precomputed per peer by health/attach.ts).
import type { Peers } from "../store/peer_health";
import { readDownFlag } from "../store/health";

/** hc:d key -> 1 down, 0 up, -1 not stored yet (the version's default_down decides) */
let flags: LuaTable<string, number> = new LuaTable();

/** Forget what was read (the health generation moved). */
export function flushCheckCache(): void {
    flags = new LuaTable();
}

/** Whether the checker holds peer gi of this set down. Only for sets with checks (set.hcKeys defined). */
export function checkedDown(set: Peers, gi: number): boolean {
    const key = (set.hcKeys as string[])[gi - 1];
    if (key === "") return false;
    let v = flags.get(key);
    if (v === undefined) {
        v = readDownFlag(key);
        flags.set(key, v);
    }
    if (v < 0) return set.hcDefaultDown === true;
    return v === 1;
}
