/** @noSelfInFile */
// Which nginx phases may yield (sleep, cosockets, DNS). Functions that may yield check this and fall back
// to a non-yielding path (a bounded spin, or no lookup) where they cannot.
const YIELDABLE: LuaTable<string, boolean> = new LuaTable();
YIELDABLE.set("rewrite", true);
YIELDABLE.set("access", true);
YIELDABLE.set("content", true);
YIELDABLE.set("timer", true);
YIELDABLE.set("ssl_cert", true);
YIELDABLE.set("ssl_session_fetch", true);

/** true when this phase may yield (sleep, cosockets) */
export function canYield(): boolean {
    return YIELDABLE.get(ngx.get_phase()) === true;
}
