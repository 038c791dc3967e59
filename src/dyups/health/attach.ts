/** @noSelfInFile */
// Gives a peer set built for a version the keys of its peers' check states (one string per peer, built
// here once so that the balancer builds none), and whether a peer whose state is not stored yet counts as
// down (default_down). Called by the version builder (registry.buildVersion). O(peers).
import type { Peers } from "../store/peer_health";
import { UpstreamSpec } from "../model";
import { downKey } from "../store/health";
import { resolveCheck, stateId } from "./config";

export function attachChecks(set: Peers, spec: UpstreamSpec): void {
    if (spec.check === undefined) return;
    const cfg = resolveCheck(spec.check);
    const keys: string[] = [];
    for (let gi = 1; gi <= set.total; gi++) {
        // servers marked down are never checked (nor picked)
        keys[gi - 1] = set.down[gi - 1] ? "" : downKey(stateId(cfg, set.ids[gi - 1]));
    }
    set.hcKeys = keys;
    set.hcDefaultDown = cfg.defaultDown;
}
