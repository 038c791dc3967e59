/** @noSelfInFile */
// The dict's budget: how much of the lua_shared_dict the configuration (u:*, r:*, c:*) may take, and what one
// key costs there. A lua_shared_dict allocates each key as one node from nginx's slab allocator: a node is the
// rbtree and shdict headers (68 bytes on 64-bit) + the key + the value, rounded up to its size class (a power
// of two up to 2 KB, whole 4 KB pages above). The writer adds the estimate of every key it writes to the
// resident counter cb and refuses, before touching anything, a write that would take cb above the budget
// (507). The rest of the dict is left to what is not configuration: the reserve (the write lease, peer health
// and connection counts, heartbeats, DNS and health-check state) and, when history_size > 0, the write
// history's share (store/history.ts), so neither can take the room the other was promised.
// Pure arithmetic on the dict's capacity; no shm access. Phases: any.
import { getOptions } from "../options";
import { dict } from "./dict";
import { LOG_KEEP } from "./keys";

/** offsetof(ngx_rbtree_node_t, color) + offsetof(ngx_http_lua_shdict_node_t, data) on 64-bit */
const NODE_HEADER = 68;
const PAGE = 4096;
/** the smallest slab chunk */
const MIN_CHUNK = 8;

/**
 * What the smallest upstream (one IP server) costs: its record (~480 bytes of JSON: the 1 KB class) and its
 * pointer (the 128-byte class). Measured with store/budget_spec.lua; used for the default max_upstreams.
 */
export const ONE_SERVER_BYTES = 1024 + 128;
/** what a log entry of a short name costs (the 128-byte class); LOG_KEEP of them stay */
const LOG_ENTRY_BYTES = 128;

/** The slab memory a key of keyLen bytes with a value of valueLen bytes (numbers: 8) takes. */
export function nodeBytes(keyLen: number, valueLen: number): number {
    const n = NODE_HEADER + keyLen + valueLen;
    if (n > PAGE / 2) return math.ceil(n / PAGE) * PAGE;
    let c = MIN_CHUNK;
    while (c < n) c = c * 2;
    return c;
}

/** The part of the dict kept out of the configuration budget: 1/16 of it, at least 64 KB. */
export function reserveBytes(capacity: number): number {
    return math.max(65536, math.floor(capacity / 16));
}

/** The share of the dict the write history may hold: an eighth of it. */
export function historyShareBytes(capacity: number): number {
    return math.floor(capacity / 8);
}

/** The configuration budget in bytes (the dict's capacity less the reserve and the history's share). */
export function budgetBytes(): number {
    const cap = dict().capacity();
    const history = getOptions().history_size > 0 ? historyShareBytes(cap) : 0;
    return cap - reserveBytes(cap) - history;
}

/** How many one-server upstreams the budget holds once the log is full: the default of max_upstreams. */
export function upstreamsThatFit(): number {
    return math.max(1, math.floor((budgetBytes() - LOG_KEEP * LOG_ENTRY_BYTES) / ONE_SERVER_BYTES));
}
