/** @noSelfInFile */
// The state file's format (dyups-state/1): one JSON object
//   { "format": "dyups-state/1", "version": V, "saved_at": T, "conf_seen": { name: md5 },
//     "upstreams": [ { "name": N, "body": B, "source": S, "endpoints": [[{ "host": H, "port": P }]],
//                      "display": SPELLING (optional), "etcd": REVISION (optional, cluster mode) } ] }
// written by dyups.state.save, read by dyups.state.load. Pure types.
import type { Endpoint } from "../model";

export const FORMAT = "dyups-state/1";

export interface SavedUpstream {
    name: string;
    body: string;
    source: string;
    /** last resolved endpoints, per server (kept for names so a restart starts with the last good answers) */
    endpoints?: Endpoint[][];
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
