/** @noSelfInFile */
// The outcome of one try, for the pickers that want it (set.wantsOutcome: ewma, registered modules with an
// outcome function): called by the balancer phase when a retry follows a try, and by the log phase for the
// last try, exactly once per try whose pick returned a peer. The phases call it only when the flag is set,
// so nginx's methods pay nothing. Pure, hot: no allocation.
import type { PeerSet, PeerState } from "./types";

/**
 * Try `gi` of `set` ended: ok false for a connection error, a timeout, or a status the location retries on;
 * elapsed: seconds from the pick to the outcome, by nginx's cached clock (ms resolution).
 */
function noteOutcome(set: PeerSet, state: PeerState, gi: number, ok: boolean, elapsed: number): void {
    const outcome = set.picker.outcome;
    if (outcome !== undefined) outcome(set, state, gi, ok, elapsed);
}

export { noteOutcome };
