/** @noSelfInFile */
// Write-path guard: a body whose checked peers' states cannot fit in the shared dict is refused with a
// reason (507, nothing changed), instead of the module's crash or silently unchecked peers (reference
// §6.1, §6.2). The estimate is conservative: STATE_BYTES per peer state that does not exist yet, against
// the dict's free pages. Content/timer/init phases (shm gets). O(checked servers of the body).
import { UpstreamRecord } from "../model";
import { getOptions } from "../options";
import { freeBytes, readState, STATE_BYTES } from "../store/health";
import { wantedOf } from "./targets";

/** [true] when the record's new check states fit, else [undefined, reason]. */
export function healthFits(rec: UpstreamRecord): LuaMultiReturn<[true, undefined] | [undefined, string]> {
    if (rec.spec.check === undefined) return $multi(true, undefined);
    const seen: LuaTable<string, boolean> = new LuaTable();
    let fresh = 0;
    for (const [, w] of ipairs(wantedOf(rec))) {
        if (seen.get(w.id) !== true) {
            seen.set(w.id, true);
            if (readState(w.id) === undefined) fresh = fresh + 1;
        }
    }
    const need = fresh * STATE_BYTES;
    const free = freeBytes();
    if (need > 0 && need > free) {
        return $multi(undefined, `shared dict "${getOptions().dict}" cannot hold the health state of ${fresh} more checked peers (about ${need} bytes needed, ${free} free); nothing was changed`);
    }
    return $multi(true, undefined);
}
