/** @noSelfInFile */
// Start-up bookkeeping that outlives a reload (the dict does): whether this dict was already loaded, and
// which upstream_conf bodies were applied (the precedence rule of startup.ts). Phases: init (master).
import * as cjson from "cjson.safe";
import { dict } from "./dict";
import { BOOT, CONF_SEEN } from "./keys";

/** true when init() already loaded this dict (a reload), false on a fresh dict (a start). */
export function booted(): boolean {
    return dict().get(BOOT)[0] !== undefined;
}

/** Marks the dict as loaded. */
export function markBooted(): void {
    dict().safe_set(BOOT, "1");
}

/** name -> md5 of the upstream_conf body last applied for it (empty when none is recorded). */
export function confSeen(): LuaTable<string, string> {
    const [raw] = dict().get(CONF_SEEN);
    if (raw !== undefined) {
        const [t] = cjson.decode(raw as string);
        if (t !== undefined && type(t) === "table") return t as LuaTable<string, string>;
    }
    return new LuaTable();
}

/** Records the upstream_conf bodies applied so far. */
export function setConfSeen(seen: LuaTable<string, string>): void {
    const [enc] = cjson.encode(seen);
    dict().safe_set(CONF_SEEN, enc ?? "{}");
}
